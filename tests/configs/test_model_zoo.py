"""The model zoo as OpenMMLab users read it: ``configs/ufo_vit/<family>/metafile.yml``
and ``README.md``, indexed by ``model-index.yml``.

- every config of a family (a ``*.py`` file in the family folder, not under ``_base_/``
  and not named ``_base*``) is listed in the family's metafile (``Config:``) and named in
  its README, and every family folder has both: a config added without them fails;
- every metafile parses and has OpenMMLab's keys: Collections with Name, Metadata, Paper,
  README and Code; Models with Name, In Collection, Config, Metadata, Results (each with
  Task and Dataset) and Weights; model names are unique across the zoo;
- every ``Config``, ``README`` and ``Code`` path in a metafile exists;
- every metric in a metafile is a number that README.md or docs/ report (as given, or as
  the fraction mmengine prints: box AP 44.5 is ``0.445``) and that the family README
  quotes: no number comes from nowhere;
- where mmengine and the config's OpenMMLab package are installed, each model's Epochs or
  Iterations and Batch Size are those its config trains with.

Text and YAML only, except the last test, which reads configs without importing ufo_mm.
"""
import functools
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / 'configs/ufo_vit'
FAMILIES = sorted(p for p in ZOO.iterdir() if p.is_dir() and p.name != '_base_')
IDS = [p.name for p in FAMILIES]
COLLECTION_KEYS = ('Name', 'Metadata', 'Paper', 'README', 'Code')
MODEL_KEYS = ('Name', 'In Collection', 'Config', 'Metadata', 'Results', 'Weights')
# Pages that may hold a measured number: README.md and docs/ (never a config README alone).
SOURCES = [REPO / 'README.md'] + sorted((REPO / 'docs').rglob('*.md'))


def load_metafile(family: Path) -> dict:
    return yaml.safe_load((family / 'metafile.yml').read_text())


# (a family without a metafile fails test_family_lists_every_config, not the collection)
MODELS = [(f, m) for f in FAMILIES if (f / 'metafile.yml').is_file()
          for m in load_metafile(f)['Models']]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def family_configs(family: Path):
    """The configs users run: the family folder's own .py files, bases excluded."""
    return sorted(p for p in family.glob('*.py') if not p.name.startswith('_base'))


def zoo_problems(family: Path, repo: Path = REPO) -> list:
    """What is wrong with one family's README.md and metafile.yml, as messages."""
    readme, metafile = family / 'README.md', family / 'metafile.yml'
    missing = [f.name for f in (readme, metafile) if not f.is_file()]
    if missing:
        return [f'{family.name}: no {" or ".join(missing)}']
    problems = []
    meta = yaml.safe_load(metafile.read_text())
    if not isinstance(meta, dict) or not meta.get('Models') or not meta.get('Collections'):
        return [f'{family.name}/metafile.yml: needs Collections and Models']
    collections = {c.get('Name') for c in meta['Collections']}
    for c in meta['Collections']:
        problems += [f'collection {c.get("Name")}: no {k}' for k in COLLECTION_KEYS if k not in c]
        for path in (c.get('README'), (c.get('Code') or {}).get('URL')):
            if path and not (repo / path).exists():
                problems.append(f'collection {c.get("Name")}: {path} does not exist')
    listed = set()
    for m in meta['Models']:
        name = m.get('Name')
        problems += [f'model {name}: no {k}' for k in MODEL_KEYS if k not in m]
        if m.get('In Collection') not in collections:
            problems.append(f'model {name}: In Collection {m.get("In Collection")!r} '
                            f'is none of {sorted(collections)}')
        config = m.get('Config') or ''
        if not (repo / config).is_file():
            problems.append(f'model {name}: Config {config} does not exist')
        listed.add(config)
        results = m.get('Results')
        if not isinstance(results, list) or not results or \
                not all(isinstance(r, dict) and {'Task', 'Dataset'} <= set(r) for r in results):
            problems.append(f'model {name}: Results must list Task and Dataset')
    text = readme.read_text()
    for config in family_configs(family):
        path = config.relative_to(repo).as_posix()
        if path not in listed:
            problems.append(f'{path} is not listed in {family.name}/metafile.yml')
        if config.name not in text:
            problems.append(f'{config.name} is not named in {family.name}/README.md')
    return problems


@pytest.mark.parametrize('family', FAMILIES, ids=IDS)
def test_family_lists_every_config(family):
    problems = zoo_problems(family)
    assert not problems, '\n'.join(problems)


NEW_FAMILY_METAFILE = """
Collections:
  - Name: New
    Metadata: {Training Data: COCO}
    Paper: {Title: A paper, URL: https://arxiv.org/abs/0000.00000}
    README: zoo/new_family/README.md
    Code: {URL: zoo/new_family/README.md, Version: v0.1.0}
Models:
  - Name: listed_1x_coco
    In Collection: New
    Config: zoo/new_family/listed_1x_coco.py
    Metadata: {Epochs: 12}
    Results: [{Task: Object Detection, Dataset: COCO}]
    Weights: null
"""


def test_a_config_added_without_its_listing_fails(tmp_path):
    """The check above sees a family without its files, and an unlisted config
    (in a scratch repository: ``zoo/`` stands for ``configs/ufo_vit/``)."""
    family = tmp_path / 'zoo/new_family'
    family.mkdir(parents=True)
    for name in ('listed_1x_coco.py', '_base_new.py', 'unlisted_1x_coco.py'):
        (family / name).write_text('')
    assert zoo_problems(family, repo=tmp_path) == ['new_family: no README.md or metafile.yml']
    (family / 'metafile.yml').write_text(NEW_FAMILY_METAFILE)
    (family / 'README.md').write_text('| `listed_1x_coco.py` | to be measured |\n')
    assert zoo_problems(family, repo=tmp_path) == [
        'zoo/new_family/unlisted_1x_coco.py is not listed in new_family/metafile.yml',
        'unlisted_1x_coco.py is not named in new_family/README.md']
    (family / 'unlisted_1x_coco.py').unlink()
    assert zoo_problems(family, repo=tmp_path) == []


def test_model_index_imports_every_family():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    assert sorted(index['Import']) == [rel(f / 'metafile.yml') for f in FAMILIES]


def test_model_names_are_unique():
    names = [m['Name'] for _, m in MODELS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def number_forms(value) -> set:
    """How a page may write a metric: 44.5 as given, or as a fraction, 0.445."""
    forms = {f'{value:g}', f'{value}'}
    if value < 100:
        forms.add(f'{value / 100:.3f}')
    return forms


def is_quoted(value, text: str) -> bool:
    return any(re.search(r'(?<![\d.])%s(?![\d])' % re.escape(f), text)
               for f in number_forms(value))


@pytest.mark.parametrize('family', FAMILIES, ids=IDS)
def test_every_metric_is_reported_where_it_was_measured(family):
    docs = '\n'.join(p.read_text() for p in SOURCES)
    readme = (family / 'README.md').read_text()
    bad = []
    for m in load_metafile(family)['Models']:
        for result in m['Results']:
            for metric, value in (result.get('Metrics') or {}).items():
                if not isinstance(value, (int, float)):
                    bad.append(f'{m["Name"]} {metric}: {value!r} is not a number')
                elif not is_quoted(value, docs):
                    bad.append(f'{m["Name"]} {metric} {value}: in neither README.md nor docs/')
                elif not is_quoted(value, readme):
                    bad.append(f'{m["Name"]} {metric} {value}: '
                               f'not quoted in {family.name}/README.md')
    assert not bad, bad
    unmeasured = [m['Name'] for m in load_metafile(family)['Models']
                  if not any(r.get('Metrics') for r in m['Results'])]
    if unmeasured:  # the README says so, not an empty cell
        assert 'to be measured' in readme, unmeasured


def test_metric_checks_see_what_they_should():
    assert is_quoted(44.5, 'bbox mAP **0.445** (AP50 0.617)')
    assert is_quoted(70.11, 'mIoU 70.11 at 128 px')
    assert not is_quoted(44.5, 'mAP 0.4451, 144.5')
    assert not is_quoted(70.1, 'mIoU 70.11')


# --- the metafiles' schedules against the configs (needs mmengine and the OpenMMLab package)

PACKAGES = {'mmdet::': 'mmdet', 'mmseg::': 'mmseg', 'mmpretrain::': 'mmpretrain'}


@functools.lru_cache(maxsize=None)
def load_config(path: str):
    """The config as mmengine resolves it, without importing ufo_mm (no torch needed)."""
    from mmengine.config import Config
    return Config.fromfile(str(REPO / path), import_custom_modules=False)


def packages_needed(path: Path) -> set:
    """The OpenMMLab packages whose bases the config or its local bases read."""
    needed, todo, seen = set(), [path], set()
    while todo:
        p = todo.pop()
        if p in seen or not p.is_file():
            continue
        seen.add(p)
        text = p.read_text()
        needed |= {pkg for prefix, pkg in PACKAGES.items() if prefix in text}
        todo += [(p.parent / b).resolve() for b in re.findall(r"'(\.{1,2}/[^']+\.py)'", text)]
    return needed


@pytest.mark.parametrize('family,model', MODELS, ids=[m['Name'] for _, m in MODELS])
def test_metadata_is_the_configs_schedule(family, model):
    pytest.importorskip('mmengine')
    missing = [p for p in packages_needed(REPO / model['Config'])
               if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f'{", ".join(missing)} not installed: the config reads its bases')
    cfg = load_config(model['Config'])
    meta = model['Metadata']
    devices = int(re.match(r'(\d+)x', meta['Training Resources']).group(1))
    assert meta['Batch Size'] == devices * cfg.train_dataloader.batch_size
    if 'Epochs' in meta:
        assert meta['Epochs'] == cfg.train_cfg.max_epochs
    else:
        assert meta['Iterations'] == cfg.train_cfg.max_iters
