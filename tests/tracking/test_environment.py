"""What a run records about where it ran, read without importing what it names."""

from __future__ import annotations

import subprocess
import sys


def test_the_torch_version_is_read_without_importing_torch():
    """A CPU run's parent never imports torch (a second or more), yet tags its runs with torch.__version__ exactly,
    a CUDA build's suffix included."""
    code = ("import sys\n"
            "from ablate.tracking._tracker import torch_version\n"
            "version = torch_version()\n"
            "assert 'torch' not in sys.modules\n"
            "import torch\n"
            "assert version == torch.__version__ == torch_version(), (version, torch.__version__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
