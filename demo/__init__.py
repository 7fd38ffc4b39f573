"""The end-to-end demo (tools/demo.py): data -> training -> evaluation -> high resolution -> report."""
