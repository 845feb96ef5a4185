import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets tests `import media_fixtures`


@pytest.fixture()
def one_cpu_thread() -> Iterator[None]:
    """torch on one thread for the test, restored after. Tiny models run fastest on one, and much faster when the
    machine's cores are busy. A module takes it with `pytestmark = pytest.mark.usefixtures("one_cpu_thread")`."""
    from hjcag.device import torch_threads

    with torch_threads(1):
        yield
