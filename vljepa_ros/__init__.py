"""VL-JEPA perception for ROS 2.

The pure-Python library (`model`, `stream`, `data`, `train`) never imports ROS. The generated
message module `vljepa_ros.msg` is installed by the ROS build (CMake/rosidl) into a prefix that
may differ from where these sources live (an editable checkout, for instance); extending the
package path lets `import vljepa_ros.msg` find it in either place.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
