"""An ONNX Runtime encoder built locally from a sentence-transformers folder.

The transformer is exported once with `torch.onnx.export`, optionally
quantised to int8 weights with ONNX Runtime's dynamic quantisation, and
cached next to the index (nothing is downloaded). Inference is one
ONNX Runtime call per batch, plus the model's own fast tokenizer and the
mean pooling and L2 normalisation that the folder's modules.json declares.
Only folders laid out as Transformer, then mean Pooling, then optionally
Normalize are supported; others raise a clear error.
"""

import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from rule_service.index import write_atomic

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class OnnxEncoderModel:
    """Tokenizer plus ONNX Runtime session with the same output as `SentenceTransformer.encode`."""

    def __init__(self, model_dir: Path, cache_dir: Path, quantize: bool, threads: int | None = None) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.max_length = _check_layout(model_dir)
        onnx_path = export_onnx(model_dir, cache_dir, quantize)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # The server's event loop shares the cores with these threads: idle threads that spin between
        # batches took CPU from it (c32 throughput 318 against 378 req/s without spinning). ONNX
        # Runtime's arena keeps the largest batch it ever saw, so resident memory grew 22% under load;
        # without it the growth was 7%, at some cost in throughput (benchmarks/bench_service.py, 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = False
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding()
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        """Embed `texts`: mean of the token states under the attention mask, L2-normalised."""
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        states = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (states * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def _check_layout(model_dir: Path) -> int:
    """Return the model's max sequence length; raise ValueError for layouts this backend cannot reproduce."""
    modules = json.loads((model_dir / "modules.json").read_text())
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    if kinds not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
        raise ValueError(f"the ONNX backend supports Transformer, Pooling[, Normalize] models; {model_dir} has {kinds}")
    pooling = json.loads((model_dir / modules[1]["path"] / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode_cls_token") or pooling.get("pooling_mode_max_tokens"):
        raise ValueError(f"the ONNX backend supports mean pooling only; {model_dir} pools with {pooling}")
    if not (model_dir / "tokenizer.json").is_file():
        raise ValueError(f"the ONNX backend needs a fast tokenizer file, {model_dir / 'tokenizer.json'} is missing")
    config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    return int(config.get("max_seq_length", 256))


def export_onnx(model_dir: Path, cache_dir: Path, quantize: bool) -> Path:
    """Export the transformer to ONNX (and int8) under `cache_dir` unless it is already there."""
    target = cache_dir / ("model_int8.onnx" if quantize else "model.onnx")
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    float_path = cache_dir / "model.onnx"
    if not float_path.is_file():
        _export_float(model_dir, float_path)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        started = time.perf_counter()
        temporary = _temporary_path(target)
        quantize_dynamic(str(float_path), str(temporary), weight_type=QuantType.QInt8)
        temporary.replace(target)
        logger.info("ONNX model quantised to int8 in %.1f s: %s", time.perf_counter() - started, target)
    return target


def _temporary_path(target: Path) -> Path:
    # A name of its own per process: two servers starting on one cache must not write the same file.
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def _export_float(model_dir: Path, path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    sample = tokenizer(["an example query", "a second, longer example query"], padding=True, return_tensors="pt")
    names = [name for name in INPUT_NAMES if name in sample]

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, "last_hidden_state")}
    temporary = _temporary_path(path)
    # The tracer warns about Python branches in the attention code; they
    # depend on padding, not on values, and the exported graph is checked
    # against torch in the tests.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(model), tuple(sample[name] for name in names), str(temporary),
            input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
            opset_version=OPSET, dynamo=False,
        )
    temporary.replace(path)
    write_atomic(path.with_suffix(".json"), json.dumps({"source": str(model_dir), "opset": OPSET}).encode())
    logger.info("ONNX model exported in %.1f s: %s", time.perf_counter() - started, path)
