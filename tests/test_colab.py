"""colab/quickstart.ipynb runs top to bottom (small setting): load, evaluate, fine-tune,
evaluate, generate — so the notebook users open is the one that works."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch, smollm2_path):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("FINDAP_QUICKSTART_SMALL", "1")
    monkeypatch.setenv("FINDAP_QUICKSTART_WORKDIR", str(tmp_path / "run"))
    nb = nbformat.read(ROOT / "colab" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")
    m = re.search(r"FPB accuracy before: ([\d.]+) after: ([\d.]+) n = 24", text)
    assert m, text[-2000:]
    assert 0 <= float(m.group(1)) <= 100 and 0 <= float(m.group(2)) <= 100
    assert "loss per step:" in text and (tmp_path / "run" / "sft" / "final").is_dir()
    assert text.count("\n- ") >= 1   # the generated answers were printed
