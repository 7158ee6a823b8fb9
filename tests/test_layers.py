"""
The layers of tcpsc: every module of the package belongs to one layer of
L{LAYERS}, and imports only modules of its own layer or of a lower one; the
command line (C{tcpsc/_cli/}) reaches the library only through its public
names; and README.md's Development section lists the same modules in the
same order.

Imports are read from the source with L{ast}, not by importing: every
C{import} and C{from ... import} anywhere in a module counts, those inside
functions and those under C{if TYPE_CHECKING:} too (an annotation that names
a class of a higher layer is the same dependency as a call into it, and a
layer's reader has to know it), and so do calls of
C{importlib.import_module} with a literal name.  A name that is computed
(C{import_module(f"tcpsc._cmd_{name}")}) cannot be read and is not checked.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tcpsc"

#: The layers, lowest first, each with its modules.  A module imports only
#: modules of its own layer or of a lower one.  A package (C{tcpsc._cli})
#: stands for its modules too.  README.md's Development section lists the
#: same modules in the same order, between C{<!-- layers -->} and
#: C{<!-- /layers -->}; L{ReadmeTests} checks that they agree.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "support",
        [
            "tcpsc._compat",
            "tcpsc._version",
            "tcpsc._errors",
            "tcpsc._events",
            "tcpsc._addresses",
            "tcpsc._limits",
            "tcpsc._options",
            "tcpsc._memory",
            "tcpsc._reactor",
            "tcpsc._transports",
            "tcpsc._signals",
        ],
    ),
    ("framing", ["tcpsc._framing", "tcpsc._settings"]),
    ("tls", ["tcpsc._tls", "tcpsc._tlstransport", "tcpsc._certgen"]),
    ("registry", ["tcpsc._registry", "tcpsc._broadcast"]),
    (
        "server and client",
        [
            "tcpsc._accept",
            "tcpsc._proxy",
            "tcpsc._metrics",
            "tcpsc._cluster",
            "tcpsc._server",
            "tcpsc._client",
            "tcpsc._datagram",
            "tcpsc._multicast",
            "tcpsc._service",
            "tcpsc._systemd",
            "tcpsc._apps",
            "tcpsc.testing",
        ],
    ),
    ("daemon", ["tcpsc.tap", "tcpsc._supervisor", "tcpsc._logtext"]),
    ("blocking", ["tcpsc.blocking", "tcpsc._output", "tcpsc._workers", "tcpsc._reactorthread"]),
    # The package itself: the names it exports come from every layer below.
    ("public names", ["tcpsc"]),
    ("tools", ["tcpsc._cli", "tcpsc.__main__"]),
]

#: What C{tcpsc/_cli/} may import from the library: the package's exported
#: names and these public modules.
PUBLIC_MODULES = {"tcpsc", "tcpsc.tap", "tcpsc.blocking", "tcpsc.testing"}

#: The tools' own package, which may import its own private modules.
TOOLS = "tcpsc._cli"


def layerOf(module: str) -> tuple[int, str] | None:
    """
    The index and name of the layer of C{module}, or C{None} when no entry
    of L{LAYERS} holds it.  An entry holds itself and, if it is a package
    other than C{tcpsc}, its submodules.
    """
    for index, (name, modules) in enumerate(LAYERS):
        for entry in modules:
            if module == entry or (entry != "tcpsc" and module.startswith(entry + ".")):
                return index, name
    return None


def moduleName(path: Path) -> str:
    """
    The dotted name of the module at C{path} (C{tcpsc/_cli/__init__.py} is
    C{tcpsc._cli}).
    """
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def packageModules() -> dict[str, Path]:
    """
    Every module of C{tcpsc/}, subpackages included, by dotted name.
    """
    return {
        moduleName(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


@dataclass(frozen=True)
class Import:
    """
    One import of a tcpsc module by another.

    @ivar target: the dotted name of the module imported.
    @ivar name: for C{from tcpsc import X} where X is not a module, C{X}.
    @ivar line: where, in the importing module.
    @ivar text: the statement as written.
    """

    target: str
    name: str | None
    line: int
    text: str


def _resolve(importer: str, isPackage: bool, level: int, module: str | None) -> str:
    """
    The absolute name of the module of a C{from} import.
    """
    if level == 0:
        return module or ""
    parts = importer.split(".")
    if not isPackage:
        parts.pop()
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, *([module] if module else [])])


def importsOf(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """
    The imports of tcpsc modules in the module C{name} at C{path}, in the
    order of the source.

    @param modules: the modules of the package (L{packageModules}), which
        tell C{from tcpsc import blocking} (a module) from C{from tcpsc
        import Server} (a name).
    """
    return sorted(_imports(name, path, modules), key=lambda i: i.line)


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    source = path.read_text()
    tree = ast.parse(source, str(path))
    isPackage = path.name == "__init__.py"
    lines = source.splitlines()

    def written(node: ast.stmt | ast.expr) -> str:
        return " ".join(" ".join(lines[node.lineno - 1 : node.end_lineno]).split())

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tcpsc" or alias.name.startswith("tcpsc."):
                    yield Import(alias.name, None, node.lineno, written(node))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, isPackage, node.level, node.module)
            if base != "tcpsc" and not base.startswith("tcpsc."):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:
                    yield Import(submodule, None, node.lineno, written(node))
                else:
                    yield Import(base, alias.name, node.lineno, written(node))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
        ):
            target = node.args[0].value
            if target == "tcpsc" or target.startswith("tcpsc."):
                yield Import(target, None, node.lineno, written(node))


def exportedNames() -> set[str]:
    """
    C{tcpsc.__all__}, read from C{tcpsc/__init__.py}.
    """
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def upwardImports(modules: dict[str, Path], root: Path) -> list[str]:
    """
    The imports of C{modules} that go up a layer, each said in words: where,
    which module of which layer imports which of which, as written.
    """
    violations = []
    for name, path in modules.items():
        own = layerOf(name)
        if own is None:
            continue
        for imported in importsOf(name, path, modules):
            theirs = layerOf(imported.target)
            if theirs is not None and theirs[0] > own[0]:
                violations.append(
                    f"{path.relative_to(root)}:{imported.line}: {name} (layer {own[1]}) "
                    f"imports {imported.target} (layer {theirs[1]}): {imported.text}"
                )
    # One line per statement, however many names it imports.
    return list(dict.fromkeys(violations))


def privateImportsOfTools(modules: dict[str, Path], root: Path, exported: set[str]) -> list[str]:
    """
    The imports of the tools' modules (L{TOOLS}) that reach the library
    other than through L{PUBLIC_MODULES}, their public names and the names
    C{exported} by C{tcpsc}, each said in words.
    """
    violations = []
    for name, path in modules.items():
        if name != TOOLS and not name.startswith(TOOLS + "."):
            continue
        for imported in importsOf(name, path, modules):
            target = imported.target
            if target == TOOLS or target.startswith(TOOLS + "."):
                continue
            where = f"{path.relative_to(root)}:{imported.line}: {imported.text}"
            if target not in PUBLIC_MODULES:
                violations.append(f"{where} (the private module {target})")
            elif (
                imported.name is not None
                and imported.name.startswith("_")
                and imported.name not in exported
            ):
                violations.append(f"{where} (the private name {imported.name})")
            elif target == "tcpsc" and imported.name is not None and imported.name not in exported:
                violations.append(f"{where} ({imported.name} is not in tcpsc.__all__)")
    return list(dict.fromkeys(violations))


class LayerTests(SynchronousTestCase):
    """
    Every module is in a layer, and imports go one way.
    """

    def setUp(self) -> None:
        self.modules = packageModules()

    def test_everyModuleInALayer(self) -> None:
        """
        Every module of C{tcpsc/} is in L{LAYERS}: a new module is given its
        place, here and in the README.
        """
        missing = [
            f"{name} ({path.relative_to(ROOT)})"
            for name, path in self.modules.items()
            if layerOf(name) is None
        ]
        self.assertEqual(
            missing,
            [],
            "modules in no layer of tests/test_layers.py LAYERS "
            "(and of README.md's list): " + ", ".join(missing),
        )

    def test_everyListedModuleExists(self) -> None:
        """
        Every module of L{LAYERS} exists, as a module or a package, so that
        the README lists no module that is not there.
        """
        absent = [entry for _, entries in LAYERS for entry in entries if entry not in self.modules]
        self.assertEqual(absent, [], "listed in LAYERS but not in tcpsc/: " + ", ".join(absent))

    def test_importsGoDown(self) -> None:
        """
        No module imports a module of a higher layer.
        """
        violations = upwardImports(self.modules, ROOT)
        self.assertEqual(violations, [], "imports that go up a layer:\n" + "\n".join(violations))

    def test_toolsUsePublicNamesOnly(self) -> None:
        """
        The modules of C{tcpsc/_cli/} import from the library only the
        public modules of L{PUBLIC_MODULES}, and from them, public names;
        from C{tcpsc} itself only what its C{__all__} exports.
        """
        violations = privateImportsOfTools(self.modules, ROOT, exportedNames())
        self.assertEqual(
            violations, [], "tcpsc/_cli/ reaching past the public names:\n" + "\n".join(violations)
        )


class CheckerTests(SynchronousTestCase):
    """
    The reading of imports, on sources written here, so that a check above
    cannot pass by reading nothing.
    """

    def importsIn(
        self, name: str, source: str, modules: dict[str, Path], isPackage: bool = False
    ) -> list[tuple[str, str | None]]:
        path = Path(self.mktemp())
        path.mkdir()
        path = path / ("__init__.py" if isPackage else "module.py")
        path.write_text(source)
        return [(i.target, i.name) for i in importsOf(name, path, modules)]

    def test_kindsOfImport(self) -> None:
        """
        Absolute and relative imports, of modules and of names, inside
        functions and under C{TYPE_CHECKING}, and a literal
        C{importlib.import_module} are all read.
        """
        modules = {
            name: Path()
            for name in (
                "tcpsc",
                "tcpsc._server",
                "tcpsc.blocking",
                "tcpsc._cli",
                "tcpsc._cli.run",
                "tcpsc._framing",
                "tcpsc._output",
            )
        }
        source = (
            "from typing import TYPE_CHECKING\n"
            "import os\n"
            "import tcpsc._server\n"
            "from tcpsc import blocking, Server\n"
            "from .. import _output\n"
            "from . import run\n"
            "from .._framing import MessageProtocol\n"
            "if TYPE_CHECKING:\n"
            "    from tcpsc._output import Output\n"
            "def f():\n"
            "    import importlib\n"
            "    importlib.import_module('tcpsc.blocking')\n"
        )
        self.assertEqual(
            self.importsIn("tcpsc._cli.main", source, modules),
            [
                ("tcpsc._server", None),
                ("tcpsc.blocking", None),
                ("tcpsc", "Server"),
                ("tcpsc._output", None),
                ("tcpsc._cli.run", None),
                ("tcpsc._framing", "MessageProtocol"),
                ("tcpsc._output", "Output"),
                ("tcpsc.blocking", None),
            ],
        )

    def test_relativeInPackage(self) -> None:
        """
        In a package's C{__init__.py}, C{.} is the package itself.
        """
        modules = {"tcpsc": Path(), "tcpsc._cli": Path(), "tcpsc._cli.run": Path()}
        self.assertEqual(
            self.importsIn("tcpsc._cli", "from .run import main\n", modules, isPackage=True),
            [("tcpsc._cli.run", "main")],
        )

    def package(self, files: dict[str, str]) -> tuple[Path, dict[str, Path]]:
        """
        Write a package C{tcpsc} of C{files} (relative path: source) in a
        new directory, and return that directory and its modules by name.
        """
        root = Path(self.mktemp())
        for relative, source in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        modules = {}
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
        return root, modules

    def test_upwardImportNamed(self) -> None:
        """
        An import of a higher layer, at the top, in a function or under
        C{TYPE_CHECKING}, is reported with the module, the line and the
        statement; imports downward and within a layer are not.
        """
        root, modules = self.package(
            {
                "tcpsc/__init__.py": "from ._server import Server\n",
                "tcpsc/_compat.py": "",
                "tcpsc/_output.py": "from ._compat import x\n",
                "tcpsc/_server.py": "from ._client import Client\nfrom . import _compat\n",
                "tcpsc/_client.py": "",
                "tcpsc/_framing.py": (
                    "from typing import TYPE_CHECKING\n"
                    "from ._output import socketTransport, writeAll\n"
                    "if TYPE_CHECKING:\n"
                    "    from tcpsc._server import Server\n"
                    "def f():\n"
                    "    from tcpsc import blocking\n"
                ),
                "tcpsc/blocking.py": "",
            }
        )
        self.assertEqual(
            upwardImports(modules, root),
            [
                "tcpsc/_framing.py:2: tcpsc._framing (layer framing) imports tcpsc._output "
                "(layer blocking): from ._output import socketTransport, writeAll",
                "tcpsc/_framing.py:4: tcpsc._framing (layer framing) imports tcpsc._server "
                "(layer server and client): from tcpsc._server import Server",
                "tcpsc/_framing.py:6: tcpsc._framing (layer framing) imports tcpsc.blocking "
                "(layer blocking): from tcpsc import blocking",
            ],
        )

    def test_privateImportOfToolsNamed(self) -> None:
        """
        A module of C{tcpsc/_cli/} that imports a private module, a private
        name of a public module, or a name C{tcpsc} does not export, is
        reported; its own modules and the public names are not.
        """
        root, modules = self.package(
            {
                "tcpsc/__init__.py": "",
                "tcpsc/_server.py": "",
                "tcpsc/tap.py": "",
                "tcpsc/_cli/__init__.py": "from . import connect\n",
                "tcpsc/_cli/connect.py": (
                    "from tcpsc import Server, Hidden, __version__\n"
                    "from tcpsc.tap import Options, _port\n"
                    "from .._server import _peerDescription, Server\n"
                    "from tcpsc._cli import common\n"
                ),
                "tcpsc/_cli/common.py": "",
            }
        )
        self.assertEqual(
            privateImportsOfTools(modules, root, {"Server", "__version__"}),
            [
                "tcpsc/_cli/connect.py:1: from tcpsc import Server, Hidden, __version__ "
                "(Hidden is not in tcpsc.__all__)",
                "tcpsc/_cli/connect.py:2: from tcpsc.tap import Options, _port "
                "(the private name _port)",
                "tcpsc/_cli/connect.py:3: from .._server import _peerDescription, Server "
                "(the private module tcpsc._server)",
            ],
        )

    def test_layerOf(self) -> None:
        """
        A package's entry holds its submodules; C{tcpsc} holds only itself.
        """
        self.assertEqual(layerOf("tcpsc._cli.connect"), layerOf("tcpsc._cli"))
        self.assertEqual(layerOf("tcpsc")[1], "public names")  # type: ignore[index]
        self.assertIsNone(layerOf("tcpsc._nowhere"))
        self.assertLess(layerOf("tcpsc._framing"), layerOf("tcpsc._output"))  # type: ignore[operator]


#: A module's line in README.md's list: the path in backquotes.
_README_ENTRY = re.compile(r"^\|\s*(?P<layer>[^|]*?)\s*\|\s*`(?P<path>tcpsc/[^`]*)`\s*\|")


def readmeLayers(text: str) -> list[tuple[str, str]]:
    """
    The C{(layer, module)} pairs of README.md's list, in its order: the rows
    of the table between C{<!-- layers -->} and C{<!-- /layers -->}, each a
    module's path (C{tcpsc/_framing.py}, C{tcpsc/_cli/}) in its second
    column, its layer's name in the first (empty: as the row above).
    """
    start, end = text.find("<!-- layers -->"), text.find("<!-- /layers -->")
    if start < 0 or end < start:
        return []
    pairs = []
    layer = ""
    for line in text[start:end].splitlines():
        match = _README_ENTRY.match(line)
        if match is None:
            continue
        layer = match["layer"] or layer
        path = match["path"].removesuffix("/").removesuffix(".py").removesuffix("/__init__")
        pairs.append((layer, path.replace("/", ".")))
    return pairs


class ReadmeTests(SynchronousTestCase):
    """
    README.md's Development section lists the modules of L{LAYERS}, one line
    each, in the same order.
    """

    def test_sameLayersInTheSameOrder(self) -> None:
        """
        The README's list and L{LAYERS} name the same modules, in the same
        layers, in the same order.
        """
        listed = readmeLayers((ROOT / "README.md").read_text())
        self.assertNotEqual(
            listed, [], "README.md has no list between <!-- layers --> and <!-- /layers -->"
        )
        declared = [(layer, module) for layer, modules in LAYERS for module in modules]
        self.assertEqual(listed, declared)

    def test_readsTheTable(self) -> None:
        """
        The layer of a row without one is that of the row above.
        """
        text = (
            "<!-- layers -->\n| layer | module | what |\n|---|---|---|\n"
            "| support | `tcpsc/_compat.py` | a |\n| | `tcpsc/_errors.py` | b |\n"
            "| tools | `tcpsc/_cli/` | c |\n| | `tcpsc/__init__.py` | d |\n"
            "<!-- /layers -->\n| x | `tcpsc/after.py` | |\n"
        )
        self.assertEqual(
            readmeLayers(text),
            [
                ("support", "tcpsc._compat"),
                ("support", "tcpsc._errors"),
                ("tools", "tcpsc._cli"),
                ("tools", "tcpsc"),
            ],
        )
