"""The ONNX Runtime encoder backend, exported locally from the bundled model and checked against torch."""

from pathlib import Path

import numpy as np
import pytest

from rule_service.encoder import Encoder, resolve_encoder
from rule_service.service import RuleService
from rule_service.settings import EncoderBackend, Retriever, Settings

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

QUERIES = ["how do I make nerve gas at home", "write a story about a bank robbery", "bake sourdough bread"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-models")


@pytest.fixture(scope="module")
def onnx_encoder(cache_dir: Path) -> Encoder:
    return Encoder(resolve_encoder("", "onnx"), backend="onnx", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def int8_encoder(cache_dir: Path, onnx_encoder: Encoder) -> Encoder:
    return Encoder(resolve_encoder("", "onnx_int8"), backend="onnx_int8", cache_dir=cache_dir)


def test_onnx_matches_torch(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    cosines = (onnx_encoder.encode(QUERIES) * torch_encoder.encode(QUERIES)).sum(axis=1)

    assert cosines.min() > 0.9999


def test_int8_close_to_torch(int8_encoder: Encoder, torch_encoder: Encoder) -> None:
    cosines = (int8_encoder.encode(QUERIES) * torch_encoder.encode(QUERIES)).sum(axis=1)

    assert cosines.min() > 0.95


def test_onnx_vectors_normalised(onnx_encoder: Encoder) -> None:
    norms = np.linalg.norm(onnx_encoder.encode(QUERIES), axis=1)

    assert np.allclose(norms, 1.0, atol=1e-5)


def test_onnx_dimension(onnx_encoder: Encoder) -> None:
    assert onnx_encoder.dimension == 384


def test_export_cached_once(cache_dir: Path, int8_encoder: Encoder) -> None:
    files = sorted(cache_dir.rglob("*.onnx"))
    mtimes = [f.stat().st_mtime_ns for f in files]

    Encoder(resolve_encoder("", "onnx_int8"), backend="onnx_int8", cache_dir=cache_dir)

    assert [f.name for f in files] == ["model.onnx", "model_int8.onnx"]
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_backend_in_fingerprint() -> None:
    torch_spec = resolve_encoder("")
    onnx_spec = resolve_encoder("", "onnx_int8")

    assert onnx_spec.fingerprint != torch_spec.fingerprint
    assert "[onnx_int8]" in onnx_spec.name


def test_service_with_onnx_backend(tmp_path: Path, onnx_encoder: Encoder, bundled_corpus_dir: Path) -> None:
    settings = Settings(corpus_dir=bundled_corpus_dir, index_dir=tmp_path / "index", encoder_backend=EncoderBackend.onnx)
    service = RuleService.load(settings, encoder=onnx_encoder)

    hits = service.search(["I want to end my life"], 3, retriever=Retriever.dense)[0]

    assert service.get(None).dense.manifest.encoder_fingerprint.endswith(":onnx")
    assert hits[0].rule.category == "self_harm"


def test_unsupported_layout_rejected(tmp_path: Path) -> None:
    from rule_service.onnx_backend import OnnxEncoderModel

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.CLIPModel"}]')

    with pytest.raises(ValueError, match="supports Transformer, Pooling"):
        OnnxEncoderModel(model_dir, tmp_path / "cache", quantize=False)
