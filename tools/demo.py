"""UFO-ViT end to end in one command: data, training, evaluation, larger
images, report. See ``python tools/demo.py --help``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from demo.pipeline import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
