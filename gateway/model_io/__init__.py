"""What the gateway hands the model and reads back from it, as text and numbers.

- ``prompt_renderer``: chat messages to the prompt string, with the model's own chat
  template.
- ``generation_params``: the OpenAI sampling fields checked and turned into the engine's
  ``GenerationParams``.
- ``tool_set``, ``tool_format``: function tools offered to the model and their calls and
  results written into the prompt; ``tool_stream``: tool calls parsed out of the
  generated text as it streams.
- ``usage``: token counts and the finish reason of a finished generation.
"""
