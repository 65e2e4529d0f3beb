"""Jobs that train nothing import no torch (each of thousands of cluster jobs would pay seconds for it), and
tokenizing without it gives exactly what ``AutoTokenizer`` gives."""

import subprocess
import sys

import pytest
import yaml

from prefinetune.data import download, fast_tokenizer, load_tokenized, tokenize
from prefinetune.families import load_registry
from prefinetune.models import fetch, texts_of

REGISTRY = {
    "pair": {"source": {"generator": {"seed": 2, "pair": True, "train": 40, "validation": 8}}, "type": "classification",
             "text": ["sentence1", "sentence2"], "label": "label", "num_labels": 2, "metric": "accuracy"},
    "choice": {"source": {"generator": {"seed": 31, "choices": [2, 3], "train": 30, "validation": 8}},
               "type": "multiple_choice", "text": ["context"], "choices": "choices", "label": "label", "num_labels": 3,
               "metric": "accuracy"},
    "passages": {"source": {"generator": {"seed": 41, "span_length": 2, "train": 20, "validation": 8}}, "type": "span",
                 "text": ["question", "context"], "label": "answers", "metric": "f1"},
}
pytestmark = pytest.mark.usefixtures("isolated_hf")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cheap")
    (root / "tasks.yaml").write_text(yaml.safe_dump(REGISTRY))
    tasks = load_registry(root / "tasks.yaml")
    for task in tasks.values():
        download(task, root / "raw" / task.name)
    fetch({"name": "tiny", "build": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                     "intermediate_size": 32, "vocab_size": 300}},
          root / "model", texts=texts_of([root / "raw" / t for t in tasks]))
    return root, tasks


def test_download_and_tokenize_jobs_never_import_torch(built, tmp_path):
    """A job's whole code path, in a fresh interpreter: the download step (a generated dataset, through the
    datasets library) and the tokenize step (all three encoder families), then torch must not be loaded."""
    root, tasks = built
    code = f"""
import sys
from prefinetune.data import download, tokenize
from prefinetune.families import load_registry
tasks = load_registry({str(root / 'tasks.yaml')!r})
for name, task in tasks.items():
    download(task, {str(tmp_path)!r} + '/raw/' + name)
    tokenize(task, {str(tmp_path)!r} + '/raw/' + name, {str(root / 'model')!r}, {str(tmp_path)!r} + '/tok/' + name,
             32, doc_stride=8)
sys.exit(3 if 'torch' in sys.modules else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, "torch was imported" if result.returncode == 3 else result.stderr[-3000:]
    for name in tasks:
        assert len(load_tokenized(tmp_path / "tok" / name, "train")) >= 20


@pytest.mark.parametrize("module", ["prefinetune.analysis", "prefinetune.subsets", "prefinetune.config"])
def test_the_analysis_steps_never_import_torch(module):
    code = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"{module} imports torch"


def test_the_fast_tokenizer_encodes_as_auto_tokenizer_does(built):
    """Every family's encoder gives the same rows with the tokenizer read from tokenizer.json as with
    AutoTokenizer, for the tiny built RoBERTa tokenizer."""
    from transformers import AutoTokenizer

    from prefinetune.families import family

    root, tasks = built
    fast, auto = fast_tokenizer(root / "model"), AutoTokenizer.from_pretrained(str(root / "model"))
    assert fast.num_special_tokens_to_add(pair=True) == auto.num_special_tokens_to_add(pair=True)
    lengths = {"max_length": 32, "doc_stride": 8}
    for name, task in tasks.items():
        rows = load_tokenized(root / "raw" / name, "train")[:10]
        data = family(task).data
        args = (rows, list(range(10))) if data.with_indices else (rows,)
        assert data.encoder(task, fast, lengths)(*args) == data.encoder(task, auto, lengths)(*args), name
