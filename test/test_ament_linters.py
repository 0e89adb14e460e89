"""The ament linters `colcon test` runs on a robot (ament_flake8); skipped where ament is not installed.

Style is enforced by ruff everywhere (pyproject.toml); ament_flake8 reads the matching [flake8]
section of setup.cfg. Files carry no per-file licence headers (the package licence is in
package.xml), so ament_copyright is not run.
"""

from __future__ import annotations

import pytest


@pytest.mark.linter
def test_flake8():
    main_with_errors = pytest.importorskip("ament_flake8.main", reason="ament_flake8 comes with a ROS 2 install")
    rc, errors = main_with_errors.main_with_errors(argv=[])
    assert rc == 0, f"Found {len(errors)} code style errors / warnings:\n" + "\n".join(errors)
