"""The package's layers, as ``ufo_mm/__init__.py``'s docstring lists them:
every import in ``ufo_mm/`` (at module level or inside a function) goes to the
importer's own layer or a lower one, and no two packages import each other,
directly or around a loop; nor do two modules.

Pure ``ast``: nothing of the package is imported, so this runs without torch.
"""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'ufo_mm'
ROOT_UNIT = 'ufo_mm'  # the package's own __init__: above every layer


def layers() -> dict:
    """{package or top-level module: layer} from the numbered list ``N. a, b, c``
    of ufo_mm/__init__.py's docstring."""
    doc = ast.get_docstring(ast.parse((PACKAGE / '__init__.py').read_text()))
    table = {}
    for number, names in re.findall(r'^(\d+)\. (.+)$', doc, re.M):
        for name in names.split(','):
            table[name.strip()] = int(number)
    return table


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split('.'))
    return path.with_suffix('.py').is_file() or (path / '__init__.py').is_file()


def imported_modules(path: Path):
    """(line, module) for each ufo_mm module the file imports, anywhere in it;
    ``from X import y`` imports the module ``X.y`` when there is one, else ``X``."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            submodules = [f'{base}.{a.name}' for a in node.names if is_module(f'{base}.{a.name}')]
            targets = submodules + ([base] if len(submodules) < len(node.names) else [])
        else:
            continue
        for target in targets:
            if target == 'ufo_mm' or target.startswith('ufo_mm.'):
                yield node.lineno, target


def unit(module: str) -> str:
    """The package (or top-level module) of ufo_mm a module belongs to."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def all_imports():
    """(file, line, importing module, imported module) over the package."""
    for path in sorted(PACKAGE.rglob('*.py')):
        for line, target in imported_modules(path):
            yield path.relative_to(PACKAGE.parent), line, module_name(path), target


def cycles(edges: dict) -> list:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    table = layers()
    units = {unit(module_name(p)) for p in PACKAGE.rglob('*.py')} - {ROOT_UNIT}
    assert units - set(table) == set(), 'place these in a layer (ufo_mm/__init__.py)'
    assert set(table) - units == set(), 'the layers name what the package does not have'


def test_no_import_goes_to_a_higher_layer():
    table = dict(layers(), **{ROOT_UNIT: float('inf')})
    upward = [f'{path}:{line} ({unit(src)}, layer {table[unit(src)]}) imports {dst} '
              f'({unit(dst)}, layer {table[unit(dst)]})'
              for path, line, src, dst in all_imports() if table[unit(dst)] > table[unit(src)]]
    assert upward == [], '\n'.join(upward)


def test_no_two_packages_import_each_other():
    edges = {}
    for _, _, src, dst in all_imports():
        if unit(src) != unit(dst):
            edges.setdefault(unit(src), set()).add(unit(dst))
    assert cycles(edges) == [], 'these packages import each other, around a loop'


def test_no_import_cycle_between_modules():
    edges = {}
    for _, _, src, dst in all_imports():
        if src != dst and not src.startswith(dst + '.'):  # a module's own package runs first
            edges.setdefault(src, set()).add(dst)
    assert cycles(edges) == [], 'these modules import each other, around a loop'


def test_the_check_sees_function_body_and_relative_imports():
    # draw_prediction imports the builder inside its body; seg_pictures the
    # overlays with a relative import at module level
    assert 'ufo_mm.builder' in {t for _, t in imported_modules(
        PACKAGE / 'visualization' / 'predictions.py')}
    assert 'ufo_mm.visualization.overlays' in {t for _, t in imported_modules(
        PACKAGE / 'visualization' / 'seg_pictures.py')}
