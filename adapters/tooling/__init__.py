"""Training and demo tooling around the registry (torch, peft, transformers users).

- ``training``, ``dataset``, ``chat_encoding``, ``content_hash``: train a LoRA adapter on
  a JSONL chat dataset.
- ``demo_kit``, ``smollm2``, ``persona_check``: the demo's base model and adapters
  (``data/``: their training sets).
- ``random_lora``: adapters with random weights, for benchmarks and tests.
"""
