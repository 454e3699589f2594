"""pip install of the pure-Python library and the `vljepa` command.

ROS users build with colcon instead (CMakeLists.txt generates the messages and installs the
same Python package beside them). This file serves people who train, evaluate or replay bags
without a ROS installation.
"""

from glob import glob

from setuptools import find_packages, setup

setup(
    # Not "vljepa_ros": that distribution name belongs to the egg-info rosidl installs with the
    # messages, and pip would uninstall it (and the generated messages) to replace it.
    name="vljepa",
    version="0.1.0",
    description="VL-JEPA perception for ROS 2: semantic embedding stream, robot-state labels, "
    "selective decoding",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vljepa_ros", "vljepa_ros.*"], exclude=["vljepa_ros.msg"]),
    include_package_data=True,
    # the shipped checkpoints (config, safetensors weights, model card)
    package_data={"vljepa_ros": ["checkpoints/*/*"]},
    # the message definitions, for offline replay without ROS (rosbags reads them)
    data_files=[("share/vljepa_ros/msg", sorted(glob("msg/*.msg")))],
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6.0",
        "torch>=2.3",
        "transformers>=5.0",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "transforms3d>=0.4",
        "mcap>=1.1",
        "mcap-ros2-support>=0.5",
        "tqdm>=4.60",
    ],
    entry_points={"console_scripts": ["vljepa = vljepa_ros.cli:main"]},
)
