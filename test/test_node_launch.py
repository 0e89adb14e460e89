"""Launch files and configuration: static checks (AST + YAML, no `launch` import), then — where
`launch` is importable (a sourced ROS 2; it is not pip-installable) — the generated descriptions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from memorywam_ros.ros.launch_utils import bag_record_cmd, launch_true, record_topics
from memorywam_ros.ros.params import CAMERA_NAMES, PARAMETERS
from memorywam_ros.runtime.robot_config import RobotConfig

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIG = ROOT / "config"


def _console_scripts() -> set[str]:
    text = (ROOT / "setup.py").read_text()
    return set(re.findall(r'"([\w\-]+)\s*=\s*[\w.]+:\w+"', text))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _node_params_yaml() -> dict:
    data = yaml.safe_load((CONFIG / "memorywam.yaml").read_text())
    return _flatten(data["memorywam_policy"]["ros__parameters"])


def test_launch_files_exist() -> None:
    names = {p.name for p in LAUNCH_FILES}
    assert {"bringup.launch.py", "record.launch.py"} <= names


def test_launch_true_reads_launch_argument_text() -> None:
    assert all(launch_true(v) for v in ("true", "True", " 1", "yes", "ON"))
    assert not any(launch_true(v) for v in ("false", "0", "", "no", "off", "truthy"))


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_references_exist(path: Path) -> None:
    tree = ast.parse(path.read_text())
    scripts = _console_scripts()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        kw = {k.arg: k.value for k in call.keywords if isinstance(k.value, ast.Constant)}
        if "executable" in kw and kw.get("package") and kw["package"].value == "memorywam_ros":
            assert kw["executable"].value in scripts, f"{path.name}: unknown executable {kw['executable'].value}"
    for const in (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)):
        if re.fullmatch(r"[\w\-]+\.yaml", const):
            found = list(CONFIG.glob(const)) + list((CONFIG / "robots").glob(const))
            assert found, f"{path.name} references config {const}, not in config/ or config/robots/"


def test_bringup_parameter_overrides_are_declared() -> None:
    tree = ast.parse((ROOT / "launch" / "bringup.launch.py").read_text())
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "overrides" for t in node.targets):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}  # type: ignore[union-attr]
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "overrides":
            keys.add(node.slice.value)  # type: ignore[union-attr]
    assert {"model_path", "robot_config", "instruction"} <= keys
    yaml_params = _node_params_yaml()
    for k in keys:
        assert k in PARAMETERS, f"bringup sets undeclared parameter {k}"
        assert k in yaml_params, f"bringup sets {k}, missing from config/memorywam.yaml"


def test_params_yaml_matches_declared_parameters() -> None:
    yaml_params = _node_params_yaml()
    assert set(yaml_params) == set(PARAMETERS)
    for name, value in yaml_params.items():
        assert value == PARAMETERS[name][0], f"{name}: yaml default {value!r} != declared {PARAMETERS[name][0]!r}"
    for cam in CAMERA_NAMES:
        assert f"cameras.{cam}.topic" in PARAMETERS
    for name, (_default, desc, _ro, _rng) in PARAMETERS.items():
        assert desc, f"{name} has no description"


def test_default_camera_topics_are_the_simulators_and_realsense_layout() -> None:
    from memorywam_ros.ros.launch_utils import CAMERA_NAMESPACES

    for cam, ns in CAMERA_NAMESPACES.items():
        assert PARAMETERS[f"cameras.{cam}.topic"][0] == f"/{ns}/camera/color/image_raw"


@pytest.mark.parametrize("path", sorted((CONFIG / "robots").glob("*.yaml")), ids=lambda p: p.name)
def test_robot_configs_load(path: Path) -> None:
    robot = RobotConfig.from_yaml(path)
    assert robot.num_joints == 14 and robot.state and robot.command


@pytest.mark.parametrize("name", ["record_topics.yaml", "record_topics_sim.yaml"])
def test_record_topics_and_command(name: str) -> None:
    path = CONFIG / name
    if not path.is_file():
        pytest.skip(f"{name} not written yet (converter)")
    topics = record_topics(path, extra=["/diagnostics"])
    assert all(t.startswith("/") for t in topics) and len(topics) == len(set(topics))
    assert any("cam_high" in t for t in topics) and topics[-1] == "/diagnostics"
    cmd = bag_record_cmd(topics, CONFIG / "record_qos_overrides.yaml", "out")
    assert cmd[:3] == ["ros2", "bag", "record"]
    assert cmd[cmd.index("-s") + 1] == "mcap" and "zstd_fast" in cmd and cmd[-len(topics):] == topics


def test_record_topics_parses_nested_topic_keys(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(
        "instruction_topic: /instruction\nsplit_topic: null\n"
        "cameras: {head: {topic: /a}}\nstate: {sources: [{topic: /b}, {topic: /a}]}\n"
    )
    assert record_topics(f) == ["/a", "/b", "/instruction"]
    (tmp_path / "empty.yaml").write_text("x: 1\n")
    with pytest.raises(ValueError):
        record_topics(tmp_path / "empty.yaml")


def _launch_actions(path: Path, args: dict[str, str]) -> list:
    import importlib.util

    from launch.actions import OpaqueFunction

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    ld = module.generate_launch_description()
    ctx = LaunchContext()
    ctx.launch_configurations.update(
        {e.name: e.default_value[0].perform(ctx) if e.default_value else "" for e in ld.entities
         if hasattr(e, "default_value")}
    )
    ctx.launch_configurations.update(args)
    out = []
    for e in ld.entities:
        if isinstance(e, OpaqueFunction):
            out += e.execute(ctx) or []
    return out


def test_generated_descriptions() -> None:
    # launch_ros first: the repo's own launch/ folder would otherwise import as a namespace package
    pytest.importorskip("launch_ros", reason="`launch`/`launch_ros` come with a sourced ROS 2; not pip-installable")
    launch = pytest.importorskip("launch")
    if not hasattr(launch, "LaunchDescription"):
        pytest.skip("`launch` resolves to the repo's launch/ folder, not ROS 2's launch")
    from launch.actions import ExecuteProcess
    from launch_ros.actions import Node

    acts = _launch_actions(ROOT / "launch" / "bringup.launch.py", {"model_path": "/ckpt"})
    assert [a.node_executable for a in acts if isinstance(a, Node)] == ["memorywam_policy"]
    acts = _launch_actions(
        ROOT / "launch" / "bringup.launch.py",
        {"model_path": "/ckpt", "use_realsense": "true", "head_serial": "_1", "left_wrist_serial": "_2",
         "right_wrist_serial": "_3", "record": "true"},
    )
    nodes = [a for a in acts if isinstance(a, Node)]
    assert sorted(n.node_executable for n in nodes).count("realsense2_camera_node") == 3
    assert any(isinstance(a, ExecuteProcess) for a in acts)
    acts = _launch_actions(ROOT / "launch" / "bringup.launch.py", {"model_path": "/ckpt", "sim": "true"})
    assert "memorywam_sim" in [a.node_executable for a in acts if isinstance(a, Node)]
    acts = _launch_actions(ROOT / "launch" / "record.launch.py", {})
    assert any(isinstance(a, ExecuteProcess) for a in acts)


@pytest.mark.parametrize("name", ["record_topics.yaml", "record_topics_sim.yaml"])
def test_record_topics_agree_with_the_converter(name: str) -> None:
    """The launch files record exactly what memorywam-convert reads back."""
    config = pytest.importorskip("memorywam_train.config")
    path = CONFIG / name
    if not path.is_file():
        pytest.skip(f"{name} not written yet (converter)")
    assert record_topics(path) == config.load_config(path).topics()
