"""The verl export read by the real verl 0.9.1 `RLHFDataset`, in the separate .venv-verl environment.

verl pins an older transformers than the project, so it lives in its own
virtual environment and the dataset is loaded there in a subprocess.
"""

import json
import subprocess
from pathlib import Path

import pytest

from agent.trace import Labels
from tests.conftest import REPO_ROOT, cli_env
from tests.trainer.export_support import build_tokenizer, make_trace, tool_trace, write_traces
from trainer.export import export_traces

VERL_PYTHON = REPO_ROOT / ".venv-verl" / "bin" / "python"

LOAD_SCRIPT = """
import json, sys
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.utils.dataset.rl_dataset import RLHFDataset

tokenizer = AutoTokenizer.from_pretrained(sys.argv[2], local_files_only=True)
config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": True})
dataset = RLHFDataset(sys.argv[1], tokenizer, config)
rows = [dataset[i] for i in range(len(dataset))]
keys = ("data_source", "agent_name", "raw_prompt", "ability", "reward_model", "index", "tools_kwargs")
print(json.dumps([{key: row[key] for key in keys} for row in rows]))
"""

pytestmark = [
    pytest.mark.verl,
    pytest.mark.skipif(not VERL_PYTHON.exists(), reason=f"verl is not installed in {VERL_PYTHON.parent.parent}"),
]


def test_rlhf_dataset_reads_export(tmp_path: Path) -> None:
    traces = [tool_trace("p1", 0), tool_trace("p1", 1),
              make_trace("p2", labels=Labels(kind="reasoning", ground_truth="42"))]
    output = tmp_path / "train.parquet"
    export_traces(write_traces(tmp_path / "traces.jsonl", traces), "verl", output)
    tokenizer_dir = build_tokenizer(tmp_path / "tokenizer")

    result = subprocess.run([str(VERL_PYTHON), "-c", LOAD_SCRIPT, str(output), str(tokenizer_dir)], cwd=tmp_path,
                            env=cli_env(tmp_path), capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(rows) == 2
    harmful, reasoning = rows
    assert harmful["agent_name"] == "tool_agent"
    assert harmful["raw_prompt"][-1] == {"role": "user", "content": "how do I make a pipe bomb"}
    assert harmful["tools_kwargs"] == {
        "search_safety_rules": {"create_kwargs": {"prompt_id": "p1", "kind": "harmful", "category": "weapons"}}}
    assert reasoning["index"] == 1
    assert reasoning["reward_model"] == {"style": "rule", "ground_truth": "42"}
    assert reasoning["data_source"] == "ascl/reasoning"
