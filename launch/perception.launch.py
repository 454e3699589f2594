"""Launch the VL-JEPA perception graph.

perception_node (camera -> vljepa/embedding, vljepa/state), and optionally decoder_node
(-> vljepa/events), overlay_node (-> vljepa/overlay, vljepa/markers), a simulated camera and RViz.
Parameters come from config/perception.yaml (or params_file); the arguments below override the
few that differ between robots. Example:

    ros2 launch vljepa_ros perception.launch.py camera_topic:=/front/color/image_raw rviz:=true
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vljepa_ros")

    camera_topic = LaunchConfiguration("camera_topic")
    compressed = LaunchConfiguration("compressed")
    params_file = LaunchConfiguration("params_file")
    checkpoint = LaunchConfiguration("checkpoint")
    device = LaunchConfiguration("device")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")

    arguments = [
        DeclareLaunchArgument(
            "camera_topic",
            default_value="/camera/image_raw",
            description="Camera topic to read (with compressed:=true, its CompressedImage topic, "
            "e.g. /camera/image_raw/compressed).",
        ),
        DeclareLaunchArgument(
            "compressed",
            default_value="false",
            description="Subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image.",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "perception.yaml"]),
            description="ROS parameter file for every node of the graph.",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="Checkpoint directory or shipped name; empty loads the shipped default.",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="cpu",
            description="Torch device for the model: cpu, cuda, cuda:N or auto.",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace for every node and topic of the graph (e.g. robot1).",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            description="Use the /clock topic (simulation or bag replay) instead of wall time.",
        ),
        DeclareLaunchArgument(
            "decoder",
            default_value="true",
            description="Start decoder_node: text events when the meaning changes.",
        ),
        DeclareLaunchArgument(
            "overlay",
            default_value="true",
            description="Start overlay_node: annotated image and RViz markers.",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            description="Open RViz with rviz/vljepa.rviz.",
        ),
        DeclareLaunchArgument(
            "sim_camera",
            default_value="false",
            description="Start sim_camera_node, a simulated arm doing pick-and-place, "
            "publishing on camera_topic (no hardware needed).",
        ),
    ]

    sim_time = {"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}
    model = {"checkpoint": checkpoint, "device": device}
    camera = {"compressed": ParameterValue(compressed, value_type=bool)}

    nodes = GroupAction(
        [
            PushRosNamespace(namespace),
            Node(
                package="vljepa_ros",
                executable="sim_camera_node",
                name="sim_camera_node",
                parameters=[params_file, sim_time],
                remappings=[("image", camera_topic)],
                condition=IfCondition(LaunchConfiguration("sim_camera")),
                output="screen",
            ),
            Node(
                package="vljepa_ros",
                executable="perception_node",
                name="perception_node",
                parameters=[params_file, model, camera, sim_time],
                remappings=[("image", camera_topic)],
                output="screen",
            ),
            Node(
                package="vljepa_ros",
                executable="decoder_node",
                name="decoder_node",
                parameters=[params_file, model, sim_time],
                condition=IfCondition(LaunchConfiguration("decoder")),
                output="screen",
            ),
            Node(
                package="vljepa_ros",
                executable="overlay_node",
                name="overlay_node",
                parameters=[params_file, camera, sim_time],
                remappings=[("image", camera_topic)],
                condition=IfCondition(LaunchConfiguration("overlay")),
                output="screen",
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "rviz", "vljepa.rviz"])],
                parameters=[sim_time],
                condition=IfCondition(LaunchConfiguration("rviz")),
                output="screen",
            ),
        ]
    )
    return LaunchDescription([*arguments, nodes])
