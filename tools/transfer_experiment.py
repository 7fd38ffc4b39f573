"""Does classification pretraining help the dense demos? Pretrain the demo classifier
(UFO and XCA attention) on synthetic data, fine-tune Mask R-CNN and UperNet from
scratch / from it / from the converted XCA one, evaluate at 1x, 4x and 8x the
training size, write WORK_DIR/transfer.md. See ``python tools/transfer_experiment.py
--help`` (``--quick``: a smoke run of a few iterations)."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from demo.transfer import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
