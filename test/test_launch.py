"""The launch file, checked from its syntax tree (launch/launch_ros cannot be installed here)
against the real package files; the parameter file; the RViz config; `vljepa run`'s graph."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import yaml
from ros_support import REPO

from vljepa_ros.launcher import NODES, launch_arguments

LAUNCH = REPO / "launch" / "perception.launch.py"
TREE = ast.parse(LAUNCH.read_text())
REQUIRED_ARGUMENTS = {
    "camera_topic", "compressed", "params_file", "checkpoint", "device", "namespace",
    "use_sim_time", "decoder", "overlay", "rviz", "sim_camera",
}  # fmt: skip


def _calls(name: str) -> list[ast.Call]:
    return [
        n for n in ast.walk(TREE)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name
    ]  # fmt: skip


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _constant(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _installed_executables() -> list[str]:
    match = re.search(r"set\(VLJEPA_NODES([^)]*)\)", (REPO / "CMakeLists.txt").read_text())
    assert match
    return match.group(1).split()


def _declared(executable: str) -> set[str]:
    module = importlib.import_module(f"vljepa_ros.nodes.{executable}")
    return {p.name for p in module.PARAMS} | {"use_sim_time"}


def _dict_names(tree: ast.Module) -> dict[str, set[str]]:
    """Module-level `name = {...}` dict literals of generate_launch_description: their keys."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = keys
    return out


def test_generate_launch_description_is_typed_and_declarative() -> None:
    """One typed generate_launch_description(); no eval/exec; no OpaqueFunction tricks."""
    functions = [n for n in TREE.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == ["generate_launch_description"]
    assert ast.unparse(functions[0].returns) == "LaunchDescription"  # type: ignore[arg-type]
    names = {n.id for n in ast.walk(TREE) if isinstance(n, ast.Name)}
    assert not names & {"eval", "exec", "OpaqueFunction"}


def test_every_argument_is_declared_with_a_description() -> None:
    """The required arguments exist, each with a non-empty description."""
    arguments = launch_arguments(LAUNCH)
    assert {a.name for a in arguments} >= REQUIRED_ARGUMENTS
    for argument in arguments:
        assert len(argument.description) > 15, argument.name
    defaults = {a.name: a.default for a in arguments}
    assert (defaults["decoder"], defaults["overlay"]) == ("true", "true")
    assert (defaults["rviz"], defaults["sim_camera"]) == ("false", "false")


def test_every_node_runs_an_installed_executable() -> None:
    """Each Node of this package names an executable that CMake installs; RViz is rviz2's."""
    installed = _installed_executables()
    for call in _calls("Node"):
        package, executable = (
            _constant(_keyword(call, "package")),
            _constant(_keyword(call, "executable")),
        )
        if package == "rviz2":
            assert executable == "rviz2"
            continue
        assert package == "vljepa_ros"
        assert executable in installed, executable
        assert (REPO / "vljepa_ros" / "nodes" / f"{executable}.py").is_file()


def test_parameter_file_and_rviz_config_exist_where_the_launch_file_looks() -> None:
    """The PathJoinSubstitution defaults point at files of this package."""
    joined = [
        [_constant(e) for e in call.args[0].elts]  # type: ignore[attr-defined]
        for call in _calls("PathJoinSubstitution")
    ]
    paths = {"/".join(str(p) for p in parts[1:]) for parts in joined}
    assert paths == {"config/perception.yaml", "rviz/vljepa.rviz"}
    for path in paths:
        assert (REPO / path).is_file(), path


def test_every_parameter_the_launch_file_sets_is_declared_by_its_node() -> None:
    """Dict parameters given to each node are parameters that node declares."""
    dicts = _dict_names(TREE)
    for call in _calls("Node"):
        executable = _constant(_keyword(call, "executable"))
        if executable == "rviz2":
            continue
        params = _keyword(call, "parameters")
        assert isinstance(params, ast.List)
        names = [e.id for e in params.elts if isinstance(e, ast.Name) and e.id in dicts]
        for name in names:
            assert dicts[name] <= _declared(str(executable)), (executable, dicts[name])


def test_parameter_file_sets_only_declared_parameters() -> None:
    """Each node section of config/perception.yaml uses only parameters its node declares."""
    data = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())
    assert set(data) == set(_installed_executables())
    for executable, section in data.items():
        params = section["ros__parameters"]
        unknown = set(params) - _declared(executable)
        assert not unknown, (executable, unknown)


def test_the_run_command_starts_the_same_graph_as_the_launch_file() -> None:
    """`vljepa run` mirrors the launch file: executables, conditions, remaps, overrides."""
    dicts = _dict_names(TREE)
    from_launch = {}
    for call in _calls("Node"):
        executable = str(_constant(_keyword(call, "executable")))
        if executable == "rviz2":
            continue
        condition = _keyword(call, "condition")
        enabled_by = None
        if condition is not None:
            inner = condition.args[0]  # type: ignore[attr-defined]
            enabled_by = _constant(inner.args[0])
        remaps = _keyword(call, "remappings")
        params = _keyword(call, "parameters")
        overrides = set()
        for element in params.elts:  # type: ignore[union-attr]
            if isinstance(element, ast.Name) and element.id in dicts:
                overrides |= dicts[element.id]
        from_launch[executable] = (enabled_by, remaps is not None, overrides)
    from_runner = {
        spec.executable: (spec.condition, spec.remap_image, set(spec.overrides)) for spec in NODES
    }
    assert from_runner == from_launch


@pytest.mark.parametrize("path", sorted((REPO / "rviz").glob("*.rviz")), ids=lambda p: p.name)
def test_rviz_config_shows_overlay_markers_and_camera(path: Path) -> None:
    """The RViz2 config is valid YAML with the overlay, camera and marker displays."""
    config = yaml.safe_load(path.read_text())
    manager = config["Visualization Manager"]
    displays = {d["Class"]: d for d in manager["Displays"]}
    topics = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert {"/vljepa/overlay", "/vljepa/markers", "/camera/image_raw"} <= topics
    assert "rviz_default_plugins/MarkerArray" in displays
    assert manager["Global Options"]["Fixed Frame"] == "camera_optical_frame"
    assert {p["Class"] for p in config["Panels"]} >= {"rviz_common/Displays"}
