"""Getting a model and its tokenizer into ``resources/models/<name>/``, loadable by ``from_pretrained``.

Three sources, as ``config.yaml``'s ``model`` section says: a Hugging Face hub id (downloaded on a node
with internet), a local folder (e.g. a checkpoint shipped in a package), or ``build``: a tiny RoBERTa or BART
(``architecture``) made here, with a byte-level BPE tokenizer trained on the experiment's own text (the embedded
defaults). The architecture of a hub or local model comes from its config: an encoder-decoder (BART) is saved
whole, LM head included (``AutoModelForSeq2SeqLM``), an encoder without a pooler (``AutoModel``).
"""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def fetch(model_cfg: dict, out_dir: str | Path, texts=None) -> None:
    """Save tokenizer + encoder weights (safetensors) of the configured model to ``out_dir``."""
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    with atomic_path(out_dir, is_dir=True) as tmp:
        if "build" in model_cfg:
            build = BUILDERS[model_cfg["build"].get("architecture", "roberta")]
            tokenizer, model = build(model_cfg["build"], texts)
        else:
            source = model_cfg.get("hub") or model_cfg["path"]
            revision = model_cfg.get("revision")
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            if AutoConfig.from_pretrained(source, revision=revision).is_encoder_decoder:
                model = AutoModelForSeq2SeqLM.from_pretrained(source, revision=revision)
            else:
                model = AutoModel.from_pretrained(source, revision=revision, add_pooling_layer=False)
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)


def build_tokenizer(spec: dict, texts):
    """RoBERTa's (and BART's) tokenizer scheme, trained on ``texts`` (an iterable of str): byte-level BPE,
    <s> A </s></s> B </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if texts is None:
        raise ValueError("building a tokenizer needs the experiment's texts")
    bpe = Tokenizer(models.BPE())  # RoBERTa's scheme: byte-level BPE, <s> A </s></s> B </s>
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.get("vocab_size", 1000), min_frequency=2, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer=trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)  # as roberta-base
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                        model_max_length=512)
    return tokenizer


def build_tiny_roberta(spec: dict, texts):
    """A randomly initialised tiny RoBERTa with a BPE tokenizer trained on ``texts`` (an iterable of str)."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    tokenizer = build_tokenizer(spec, texts)
    hidden = spec.get("hidden_size", 64)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=spec.get("num_hidden_layers", 2),
        num_attention_heads=spec.get("num_attention_heads", 2), intermediate_size=spec.get("intermediate_size", 4 * hidden),
        max_position_embeddings=514, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, type_vocab_size=1,
    )
    torch.manual_seed(spec.get("seed", 0))
    return tokenizer, RobertaModel(config, add_pooling_layer=False)


def build_tiny_bart(spec: dict, texts):
    """A randomly initialised tiny BART (encoder, decoder and LM head; ``num_hidden_layers`` each) with the same
    kind of tokenizer. The decoder starts from </s>, as facebook/bart-base's does."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = build_tokenizer(spec, texts)
    hidden, layers, heads = spec.get("hidden_size", 64), spec.get("num_hidden_layers", 2), spec.get("num_attention_heads", 2)
    ffn = spec.get("intermediate_size", 4 * hidden)
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=hidden, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
        max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(spec.get("seed", 0))
    return tokenizer, BartForConditionalGeneration(config)


BUILDERS = {"roberta": build_tiny_roberta, "bart": build_tiny_bart}  # model.build.architecture


def texts_of(dataset_dirs) -> list[str]:
    """All text of the training splits of saved datasets (what a built tokenizer is trained on)."""
    from datasets import Value, load_from_disk

    texts = []
    for path in dataset_dirs:
        train = load_from_disk(str(path))["train"]
        for column, feature in train.features.items():
            if isinstance(feature, Value) and feature.dtype == "string":
                texts.extend(train[column])
            elif column == "choices":  # multiple choice: a list of strings per row
                texts.extend(choice for row in train[column] for choice in row)
    return texts
