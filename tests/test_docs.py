"""The documentation names only what the repository has.

README.md, docs/**/*.md and the model zoo's configs/**/README.md:
- every relative link and image ``[text](target)`` points at a file or folder
  of the repository, and a ``#fragment`` into a Markdown file at one of its
  headings (GitHub's anchors);
- every repository path in code (inline or fenced), such as ``tools/train.py``,
  ``configs/ufo_vit/...``, ``docs/...``, ``ufo_mm/...`` or
  ``tests/x.py::test_name``, exists (and so does the test it names);
- every dotted ``ufo_mm.module.name`` names a module of the package and a name
  in it;
- every bare script name (``train.py``, ``run_demo.sh``) is the name of a file
  of the repository.

Code (``ufo_mm/``, ``tools/``, ``configs/``, ``tests/``, ``setup.py``,
``setup.cfg``): every repository path and every ``docs/*.md`` it names exists.

Paths that users create (``work_dirs/``, ``data/``, ``.venv/``, checkpoints)
and files inside installed packages (``mmdet/.mim/tools/train.py``) are not
repository paths: only paths that start with one of the repository's own
top-level folders are checked, and not when they follow another folder.

Pure text scanning, no imports of the package: it runs without mmcv.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / 'README.md'] + list((REPO / 'docs').rglob('*.md')) +
              list((REPO / 'configs').rglob('README.md')))  # the model zoo's pages
TOP_DIRS = ('ufo_mm', 'tools', 'configs', 'docs', 'tests', 'requirements')
CODE_DIRS = ('ufo_mm', 'tools', 'configs', 'tests')
CODE_SUFFIXES = ('.py', '.sh', '.cfg')
# Bare file names that the docs quote from installed packages (mmseg's base configs).
UPSTREAM_FILE_NAMES = {'default_runtime.py'}

# Files that the code names but that are not in the repository yet. Each entry
# is a defect to fix by adding the file (then delete the entry), not a place
# to silence a new failure.
# A repository path: one of the top-level folders, not preceded by a path or
# identifier character (so ``mmdet/.mim/tools/x.py`` and ``mmseg::_base_/...``
# are not taken for ``tools/x.py``), up to the first character that cannot be
# part of a path.
PATH_RE = re.compile(r'(?<![\w./:~-])((?:%s)/[\w./*{}<>@-]*(?:::\w+)?)' % '|'.join(TOP_DIRS))
MODULE_RE = re.compile(r'(?<![\w./])(ufo_mm(?:\.\w+)+)')
SCRIPT_RE = re.compile(r'(?<![\w./-])([\w-]+\.(?:py|sh))(?![\w./])')
LINK_RE = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
FENCE_RE = re.compile(r'^(```|~~~)[^\n]*\n(.*?)^\1', re.M | re.S)
INLINE_CODE_RE = re.compile(r'`([^`\n]+)`')
PLACEHOLDER_RE = re.compile(r'[*{}<>]|\.\.\.|(?:^|/)[A-Z][A-Z0-9_]*(?:\.\w+)?(?:/|$)')


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def strip_fences(text: str) -> str:
    return FENCE_RE.sub('', text)


def code_spans(text: str):
    """Fenced blocks whole, then inline code of the text outside them."""
    for m in FENCE_RE.finditer(text):
        yield m.group(2)
    yield from INLINE_CODE_RE.findall(strip_fences(text))


def github_anchors(md: Path) -> set:
    """The ``#fragments`` GitHub gives the headings of a Markdown file."""
    anchors, seen = set(), {}
    for line in strip_fences(md.read_text()).splitlines():
        m = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        title = re.sub(r'<[^>]+>', '', m.group(1))  # inline HTML
        title = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', title)  # links: their text
        slug = re.sub(r'[^\w\- ]', '', title.strip().lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f'{slug}-{n}')
    return anchors


def defines(py: Path, name: str) -> bool:
    """``name`` is defined or imported in the module (text search)."""
    return re.search(r'(?m)(^\s*(def|class)\s+%s\b|^%s\s*[:=]|\bimport\b.*\b%s\b|'
                     r'^\s+%s,?\s*$)' % ((re.escape(name),) * 4), py.read_text()) is not None


def repo_path_problem(token: str):
    """None if the repository path ``token`` exists, else what is wrong."""
    token = token.rstrip('.,;:')
    path, _, test = token.partition('::')
    if PLACEHOLDER_RE.search(path):  # configs/ufo_vit/upernet/CONFIG.py, *-3x, {train,val}
        parent = re.split(r'/[^/]*(?:[*{}<>]|\.\.\.|[A-Z]{2})', path)[0]
        return None if (REPO / parent).exists() else f'{parent} (parent of {token})'
    target = REPO / path
    if not target.exists():
        # tests/models/memory_tracker.LiveTensorTracker: a module and a name in it
        stem, dot, name = target.name.partition('.')
        module = target.with_name(stem + '.py')
        if dot and module.is_file() and re.fullmatch(r'[A-Za-z_]\w*', name) and \
                defines(module, name):
            return None
        return token
    if test and not re.search(r'(?m)^\s*(async\s+)?def\s+%s\b' % re.escape(test),
                              target.read_text()):
        return f'{token} (no test {test} in {path})'
    return None


def module_problem(dotted: str):
    """None if ``ufo_mm.a.b[.name]`` is a module of the package (and a name in it)."""
    parts = dotted.split('.')
    for i in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:i])
        module = base / '__init__.py' if base.is_dir() else base.with_suffix('.py')
        if module.is_file():
            rest = parts[i:]
            if not rest or defines(module, rest[0]):
                return None
            return f'{dotted} ({rest[0]} is not defined in {rel(module)})'
    return dotted


def repo_file_names() -> set:
    skip = {'.git', '.venv', 'work_dirs', 'data', '__pycache__'}
    return {p.name for p in REPO.rglob('*') if p.is_file() and not skip & set(p.parts)}


@pytest.mark.parametrize('md', DOCS, ids=rel)
def test_links_point_into_the_repository(md):
    bad = []
    for target in LINK_RE.findall(strip_fences(md.read_text())):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # https:, mailto:
            continue
        path, _, fragment = target.partition('#')
        dest = (md.parent / path).resolve() if path else md
        if not dest.exists():
            bad.append(f'{target}: no such file')
        elif fragment and dest.suffix == '.md' and fragment not in github_anchors(dest):
            bad.append(f'{target}: no heading #{fragment} in {rel(dest)}')
    assert not bad, f'{rel(md)} links to what the repository does not have: {bad}'


@pytest.mark.parametrize('md', DOCS, ids=rel)
def test_named_paths_exist(md):
    bad = []
    names = None
    for code in code_spans(md.read_text()):
        bad += filter(None, map(repo_path_problem, PATH_RE.findall(code)))
        bad += filter(None, map(module_problem, MODULE_RE.findall(code)))
        for script in SCRIPT_RE.findall(code):
            names = names or repo_file_names()
            if script not in names and script not in UPSTREAM_FILE_NAMES:
                bad.append(f'{script} (no file of that name)')
    assert not bad, f'{rel(md)} names what the repository does not have: {sorted(set(bad))}'


def code_files():
    files = [REPO / 'setup.py', REPO / 'setup.cfg']
    for d in CODE_DIRS:
        files += [p for p in sorted((REPO / d).rglob('*'))
                  if p.suffix in CODE_SUFFIXES and '__pycache__' not in p.parts]
    return [f for f in files if f.is_file() and f != Path(__file__).resolve()]


def test_code_names_only_repository_files():
    bad = []
    for f in code_files():
        for token in PATH_RE.findall(f.read_text()):
            problem = repo_path_problem(token)
            if problem:
                bad.append(f'{rel(f)}: {problem}')
    assert not bad, f'code names files that are not in the repository: {bad}'


def test_no_references_outside_the_repository():
    """Readers see the repository only: no notes outside it, no project tracker."""
    pattern = re.compile(r'PAPER\.md|\bissues?\s+#?\d+|\b(?:last|this|previous|next) session\b|'
                         r'\bthe (?:issue|team|brief)\b|(?<![\w/])#\d+\b', re.I)
    bad = []
    for f in DOCS + code_files():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in pattern.finditer(line):
                bad.append(f'{rel(f)}:{i}: {m.group(0)!r}')
    assert not bad, f'references readers cannot follow: {bad}'


def test_the_checks_see_what_they_should():
    """The scanners find paths, placeholders and exclusions as intended."""
    assert PATH_RE.findall('python tools/train.py CONFIG') == ['tools/train.py']
    assert PATH_RE.findall('.venv/lib/python3.11/site-packages/mmdet/.mim/tools/train.py') == []
    assert PATH_RE.findall("'mmdet::_base_/models/mask-rcnn_r50_fpn.py'") == []
    assert PATH_RE.findall('work_dirs/demo/report.md data/coco/') == []
    assert repo_path_problem('tools/no_such_tool.py') == 'tools/no_such_tool.py'
    assert repo_path_problem('configs/ufo_vit/upernet/CONFIG.py') is None
    assert repo_path_problem('tests/test_docs.py::test_the_checks_see_what_they_should') is None
    assert repo_path_problem('tests/test_docs.py::no_such_test') is not None
    assert module_problem('ufo_mm.models.no_such_module') is not None
    assert module_problem('ufo_mm.models.ufo_attention.UFOAttention') is None
    assert '1-ufo-attention' in github_anchors(REPO / 'docs' / 'model.md')
