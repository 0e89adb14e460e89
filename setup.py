"""ament_python package `memorywam_ros` (policy node, runtime, network) plus the trainer `memorywam_train`.

Installs the same way with `colcon build` on a robot (system ROS 2) and with `pip install -e .[dev]`
on a machine without ROS (the ROS 2 pip wheels then provide rclpy; see scripts/setup.sh).
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "memorywam_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["memorywam_ros", "memorywam_ros.*", "memorywam_train", "memorywam_train.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/robots", glob("config/robots/*.yaml")),
        ("share/" + package_name + "/config/msg", glob("config/msg/*.msg")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24,<3",
        "torch>=2.4",
        "diffusers>=0.35,<0.43",
        "transformers>=4.50,<6",
        "safetensors>=0.4",
        "pyyaml>=6",
        "pillow>=10",
        "h5py>=3.9",
        "rosbags>=0.10,<0.12",
        "tqdm>=4.60",
        "rich>=13",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "sentencepiece>=0.1.99",
        # LeRobot datasets in/out (memorywam-import-lerobot / -export-lerobot): parquet and MP4
        # read and written directly, since `lerobot` itself pins an older torch (README)
        "pyarrow>=14",
        "av>=12",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "ruff>=0.6"],
        "sim": ["gym-aloha>=0.1.5,<0.2", "minigrid>=3.0,<4"],
        "realsense": ["pyrealsense2>=2.55"],
    },
    zip_safe=True,
    maintainer="memorywam_ros maintainers",
    description="MemoryWAM world action model as a ROS 2 policy node, with its trainer.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            # ROS 2 executables (`ros2 run memorywam_ros <name>`)
            "memorywam_policy = memorywam_ros.ros.policy_node:main",
            "memorywam_sim = memorywam_ros.ros.sim_node:main",
            # tools
            "memorywam-demo = memorywam_ros.ros.demo:main",
            "memorywam-params = memorywam_ros.model.param_count:main",
            "memorywam-checkpoint = memorywam_ros.runtime.checkpoint:main",
            "memorywam-encode-instructions = memorywam_ros.runtime.instructions:main",
            "memorywam-sim-demos = memorywam_ros.sim.demos:main",
            "memorywam-convert = memorywam_train.convert:main",
            "memorywam-import-robotwin = memorywam_train.robotwin:main",
            "memorywam-import-lerobot = memorywam_train.lerobot_import:main",
            "memorywam-export-lerobot = memorywam_train.lerobot_export:main",
            "memorywam-precompute = memorywam_train.precompute:main",
            "memorywam-train = memorywam_train.train:main",
            "memorywam-train-vae = memorywam_train.vae_train:main",
        ],
    },
)
