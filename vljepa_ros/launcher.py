"""`vljepa run`: the node graph of launch/perception.launch.py without `ros2 launch`.

`launch` and `launch_ros` are not always installed (they are not on PyPI), so the same graph can
be started here: the same executables, the same parameter file, the same arguments (read from
the launch file's DeclareLaunchArgument calls, so names, defaults and descriptions agree), each
node in its own process. Ctrl-C (SIGINT) or SIGTERM stops every node cleanly; a node that dies
stops the graph with its exit status.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def share_dir() -> Path:
    """The package's share files: the checkout, or the ROS install's share/vljepa_ros."""
    if (PACKAGE_ROOT / "launch" / "perception.launch.py").is_file():
        return PACKAGE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("vljepa_ros"))
    except (ImportError, LookupError, OSError) as exc:
        raise FileNotFoundError(
            "cannot find launch/perception.launch.py: run from a checkout or a sourced ROS "
            "workspace where vljepa_ros is installed"
        ) from exc


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, as the launch file starts it."""

    executable: str
    condition: str | None  # the boolean launch argument that enables it; None: always
    remap_image: bool  # "image" remapped to camera_topic
    overrides: tuple[str, ...]  # parameters set from launch arguments, beyond the YAML


# The graph of launch/perception.launch.py (test_launch checks that they agree).
NODES: tuple[NodeSpec, ...] = (
    NodeSpec("sim_camera_node", "sim_camera", True, ("use_sim_time",)),
    NodeSpec("perception_node", None, True, ("checkpoint", "device", "compressed", "use_sim_time")),
    NodeSpec("decoder_node", "decoder", False, ("checkpoint", "device", "use_sim_time")),
    NodeSpec("overlay_node", "overlay", True, ("compressed", "use_sim_time")),
)


def launch_arguments(launch_file: Path) -> list[LaunchArgument]:
    """The DeclareLaunchArgument calls of a launch file, read from its syntax tree."""
    tree = ast.parse(launch_file.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"
        ):
            continue
        name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        keywords = {k.arg: k.value for k in node.keywords}
        default = keywords.get("default_value")
        description = keywords.get("description")
        found.append(
            LaunchArgument(
                name=str(name),
                default=str(default.value) if isinstance(default, ast.Constant) else "",
                description=_string(description),
            )
        )
    return found


def _string(node: ast.expr | None) -> str:
    """A string constant, or implicitly concatenated constants."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def node_command(spec: NodeSpec, args: dict[str, str]) -> list[str]:
    """The command line that starts `spec` with the graph's arguments."""
    command = [sys.executable, "-m", f"vljepa_ros.nodes.{spec.executable}", "--ros-args",
               "--params-file", args["params_file"]]  # fmt: skip
    if spec.remap_image:
        command += ["-r", f"image:={args['camera_topic']}"]
    for name in spec.overrides:
        value = args[name]  # each override comes from the launch argument of the same name
        command += ["-p", f"{name}:={value}" if value else f'{name}:=""']
    if args["namespace"]:
        command += ["-r", f"__ns:=/{args['namespace'].strip('/')}"]
    return command


def enabled(spec: NodeSpec, args: dict[str, str]) -> bool:
    return spec.condition is None or args[spec.condition].lower() in ("true", "1", "yes")


class Graph:
    """The node processes of one run; output lines are prefixed with the node's name."""

    def __init__(self, args: dict[str, str], echo: Callable[[str], None] = print) -> None:
        self.args = args
        self.echo = echo
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        commands = {
            spec.executable: node_command(spec, self.args)
            for spec in NODES
            if enabled(spec, self.args)
        }
        if self.args.get("rviz", "false").lower() in ("true", "1", "yes"):
            rviz = shutil.which("rviz2")
            if rviz is None:
                raise FileNotFoundError("rviz:=true but rviz2 is not installed (not on PATH)")
            commands["rviz2"] = [rviz, "-d", str(share_dir() / "rviz" / "vljepa.rviz")]
        for name, command in commands.items():
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            self.processes[name] = process
            thread = threading.Thread(target=self._pump, args=(name, process), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.echo(f"[{name}] {line.rstrip()}")

    def failed(self) -> tuple[str, int] | None:
        """The first node that exited on its own, with its status."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGINT every node, wait, then kill what is left; exit status per node."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
                self.echo(f"[run] {name} did not stop within {timeout:g} s and was killed")
        for thread in self._threads:
            thread.join(timeout=2.0)
        return codes


def resolve_arguments(given: dict[str, str | None]) -> dict[str, str]:
    """Launch-file defaults, with the package's parameter file, then the given values."""
    share = share_dir()
    values = {
        a.name: a.default for a in launch_arguments(share / "launch" / "perception.launch.py")
    }
    values["params_file"] = str(share / "config" / "perception.yaml")
    for name, value in given.items():
        if value is not None:
            values[name] = value
    params_file = Path(values["params_file"])
    if not params_file.is_file():
        raise FileNotFoundError(f"params_file {params_file} does not exist")
    return values


def run_graph(
    given: dict[str, str | None],
    duration: float | None = None,
    on_tick: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Start the graph, wait until Ctrl-C, `duration` seconds, `stop_event` or a node's death."""
    args = resolve_arguments(given)
    graph = Graph(args)
    stop = stop_event or threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    previous_int = signal.signal(signal.SIGINT, lambda *_: stop.set())
    graph.start()
    print(f"[run] started {', '.join(graph.processes)}; Ctrl-C stops them", flush=True)
    started = time.monotonic()
    status = 0
    try:
        while not stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                break
            dead = graph.failed()
            if dead is not None:
                print(f"[run] {dead[0]} exited with status {dead[1]}; stopping the graph")
                status = dead[1] or 1
                break
            if on_tick is not None:
                on_tick()
            time.sleep(0.1)
    finally:
        codes = graph.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    bad = {name: code for name, code in codes.items() if code not in (0, -signal.SIGINT)}
    if bad and not status:
        print(f"[run] nodes exited with errors: {bad}")
        status = 1
    return status


def _shown_default(argument: LaunchArgument) -> str:
    if argument.name == "params_file":
        return "this package's config/perception.yaml"
    return argument.default or "empty"


def add_run_arguments(parser: object, arguments: Sequence[LaunchArgument]) -> None:
    """One --option per launch argument, with the launch file's description."""
    for argument in arguments:
        parser.add_argument(  # type: ignore[attr-defined]
            f"--{argument.name.replace('_', '-')}",
            dest=argument.name,
            default=None,
            help=f"{argument.description} (default: {_shown_default(argument)})",
        )
