"""``FolderTokenizer``: a model folder's tokenizer and chat template, read with the
``tokenizers`` library and Jinja, without ``transformers``.

A gateway in remote mode needs the model's tokenizer (prompts go to the replicas as
token ids) but no ML framework; ``transformers`` imports hundreds of modules, and
``torch`` when it can. This class reads the files ``save_pretrained`` writes and gives
the ids ``transformers``' ``AutoTokenizer`` gives for them (``tests/test_chat_template_parity.py``
proves it against ``transformers`` for every template the project ships or tests):

- ``tokenizer.json``: the Rust tokenizer, as written (normalizer, pre-tokenizer, model,
  added tokens); truncation and padding off, as ``apply_chat_template`` calls it;
- ``tokenizer_config.json`` (and the legacy ``special_tokens_map.json`` /
  ``added_tokens.json`` when it lists no ``added_tokens_decoder``): the named special
  tokens the template sees (``bos_token``, ``eos_token``, ..., and model-specific
  ``*_token`` keys), and the added tokens ``transformers`` adds on load, added in the
  same order so they get the same ids; ``split_special_tokens``;
- the chat template: ``chat_template.jinja`` (and ``additional_chat_templates/*.jinja``)
  over ``tokenizer_config.json``'s ``chat_template`` (a string or named templates).

Not covered: folders without ``tokenizer.json`` (sentencepiece-only or tiktoken-only
tokenizers; ``transformers`` converts those), and the Mistral pre-tokenizer fix that
``transformers`` applies to Mistral folders saved before its version 5.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer

from gateway.model_io.chat_template import ChatTemplateError, TemplateSource, render_chat

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
TEMPLATE_DIR = "additional_chat_templates"
LEGACY_SPECIAL_TOKENS_FILE = "special_tokens_map.json"
LEGACY_ADDED_TOKENS_FILE = "added_tokens.json"
NAMED_SPECIAL_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
"""``transformers``' ``SPECIAL_TOKENS_ATTRIBUTES``, in its order."""


class TokenizerFilesError(ValueError):
    """The folder holds no tokenizer this class can read, or a malformed file."""


class FolderTokenizer:
    """The tokenizer of one model folder. Safe to share between threads once built: no
    method changes it (callers that want other encoding settings copy
    ``backend_tokenizer``, as ``PromptRenderer`` does)."""

    def __init__(
        self,
        backend: Tokenizer,
        special_tokens_map: Mapping[str, str],
        chat_template: TemplateSource | None,
        *,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self._backend = backend
        self.special_tokens_map = dict(special_tokens_map)
        self.chat_template = chat_template
        self._clean_up_spaces = clean_up_tokenization_spaces
        unk = self.special_tokens_map.get("unk_token")
        self._unk_id = backend.token_to_id(unk) if unk is not None else None

    @classmethod
    def from_dir(cls, path: Path) -> FolderTokenizer:
        folder = Path(path)
        tokenizer_file = folder / TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise TokenizerFilesError(
                f"{folder} has no {TOKENIZER_FILE}: loragate reads the Hugging Face tokenizers "
                "format (what transformers' save_pretrained writes for a fast tokenizer)"
            )
        backend = Tokenizer.from_file(str(tokenizer_file))
        config = _settings(folder)
        named, extra = _special_tokens(config)
        added = [*_added_tokens(folder, config, named), *_missing(backend, config, named, extra)]
        if added:
            backend.add_tokens(added)
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        return cls(
            backend,
            {key: _content(value) for key, value in named.items()},
            _chat_template(folder, config),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        )

    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(self._backend.get_added_tokens_decoder())

    def __len__(self) -> int:
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """The id of a token string (the unknown token's id when it has none), or a list
        of them for a list of strings."""
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int | None:
        found = self._backend.token_to_id(token)
        return self._unk_id if found is None else int(found)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._backend.id_to_token(int(i)) for i in ids]

    def encode(
        self, text: str, add_special_tokens: bool = False, split_special_tokens: bool = False
    ) -> list[int]:
        """Token ids of ``text``; special-token strings in it are parsed unless
        ``split_special_tokens`` (or the folder's setting) says to keep them text."""
        backend = self._literal if split_special_tokens else self._backend
        return list(backend.encode(text, add_special_tokens=add_special_tokens).ids)

    @functools.cached_property
    def _literal(self) -> Tokenizer:
        """A copy that never parses special tokens (set once: flipping the flag on the
        shared tokenizer per call would leak into other threads' calls)."""
        literal = copy.deepcopy(self._backend)
        literal.encode_special_tokens = True
        return literal

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = str(self._backend.decode(list(token_ids), skip_special_tokens=skip_special_tokens))
        # transformers skips the clean-up for BPE models (it would eat spaces before
        # punctuation), whatever the config says.
        if self._clean_up_spaces and type(self._backend.model).__name__ != "BPE":
            text = _clean_up_tokenization(text)
        return text

    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **variables: Any,
    ) -> str | list[int]:
        """``transformers``' ``apply_chat_template`` for one conversation: the text, or
        (``tokenize``) its ids, encoded without adding special tokens (the template
        writes them). Raises ``ChatTemplateError``."""
        text = render_chat(
            self.chat_template,
            conversation,
            special_tokens=self.special_tokens_map,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            documents=documents,
            **variables,
        )
        return self.encode(text) if tokenize else text


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerFilesError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerFilesError(f"{path} is not a JSON object")
    return data


def _settings(folder: Path) -> dict[str, Any]:
    """``tokenizer_config.json``, with the legacy ``special_tokens_map.json`` on top when
    the config lists no ``added_tokens_decoder`` (as ``transformers`` merges them)."""
    config = _read_json(folder / CONFIG_FILE) or {}
    if "added_tokens_decoder" not in config:
        legacy = _read_json(folder / LEGACY_SPECIAL_TOKENS_FILE) or {}
        for key, value in legacy.items():
            if key in ("extra_special_tokens", "additional_special_tokens") and isinstance(
                value, list
            ):
                current = _extra_list(config)
                config["extra_special_tokens"] = current + [v for v in value if v not in current]
                config.pop("additional_special_tokens", None)
            else:
                config[key] = value
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    return config


def _extra_list(config: Mapping[str, Any]) -> list[Any]:
    value = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    return list(value) if isinstance(value, list) else []


def _is_token(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and "content" in value)


def _content(value: Any) -> str:
    return str(value["content"]) if isinstance(value, dict) else str(value)


def _special_tokens(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The named special tokens (standard names first, then model-specific ``*_token``
    keys and a dict ``extra_special_tokens``) and the extra (unnamed) ones."""
    named = {k: config[k] for k in NAMED_SPECIAL_TOKENS if _is_token(config.get(k))}
    for key, value in config.items():
        standard = key in named or key in NAMED_SPECIAL_TOKENS
        if key.endswith("_token") and not standard and _is_token(value):
            named[key] = value
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):
        named.update({k: v for k, v in extra.items() if _is_token(v)})
        return named, []
    return named, [v for v in extra or [] if _is_token(v)]


def _added_token(value: Any, *, special: bool | None = None) -> AddedToken:
    if isinstance(value, str):
        return AddedToken(value, special=True if special is None else special)
    fields = {k: v for k, v in value.items() if k != "__type"}
    if special is not None:
        fields["special"] = special
    return AddedToken(**fields)


def _added_tokens(folder: Path, config: Mapping[str, Any], named: Mapping[str, Any]) -> list[Any]:
    """The added tokens ``transformers`` re-adds on load: the config's
    ``added_tokens_decoder`` in id order, else the legacy files' and ``tokenizer.json``'s."""
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        return [_added_token(v) for _, v in sorted(decoder.items(), key=lambda kv: int(kv[0]))]
    tokens: dict[int, AddedToken] = {}
    legacy = _read_json(folder / LEGACY_ADDED_TOKENS_FILE)
    if legacy is not None:
        specials = {_content(v) for v in named.values()} | {
            _content(v) for v in _extra_list(config)
        }
        for text, index in legacy.items():
            special = text in specials
            tokens[int(index)] = AddedToken(
                text, lstrip=False, rstrip=False, normalized=not special, special=special
            )
    serialized = _read_json(folder / TOKENIZER_FILE) or {}
    for entry in serialized.get("added_tokens") or []:
        fields = {k: v for k, v in entry.items() if k != "id"}
        tokens[int(entry["id"])] = AddedToken(**fields)
    return [tokens[i] for i in sorted(tokens)]


def _missing(
    backend: Tokenizer, config: Mapping[str, Any], named: Mapping[str, Any], extra: list[Any]
) -> list[AddedToken]:
    """Named and extra special tokens the tokenizer does not have yet, added after the
    listed ones as ``transformers`` adds them: a named one always special, an extra one
    given as text special, one given as an object with its own flags."""
    decoder = config.get("added_tokens_decoder")
    listed = [_content(v) for v in decoder.values()] if isinstance(decoder, dict) else []
    known = {t.content for t in backend.get_added_tokens_decoder().values()} | set(listed)
    missing: list[AddedToken] = []
    for value, is_named in [*((v, True) for v in named.values()), *((v, False) for v in extra)]:
        text = _content(value)
        if text not in known:
            known.add(text)
            missing.append(_added_token(value, special=True if is_named else None))
    return missing


def _chat_template(folder: Path, config: Mapping[str, Any]) -> TemplateSource | None:
    """``chat_template.jinja`` and ``additional_chat_templates/*.jinja`` win over the
    config's ``chat_template`` (a string, or a list of ``{name, template}``)."""
    templates: dict[str, str] = {}
    default = folder / TEMPLATE_FILE
    if default.is_file():
        templates["default"] = default.read_text(encoding="utf-8")
    extra_dir = folder / TEMPLATE_DIR
    if extra_dir.is_dir():
        for file in sorted(extra_dir.glob("*.jinja")):
            templates[file.name.removesuffix(".jinja")] = file.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = config.get("chat_template")
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, list):
        try:
            return {str(t["name"]): str(t["template"]) for t in value}
        except (KeyError, TypeError) as exc:
            raise TokenizerFilesError(f"malformed chat_template list in {CONFIG_FILE}") from exc
    raise ChatTemplateError(f"chat_template in {CONFIG_FILE} is neither text nor a list")


def _clean_up_tokenization(text: str) -> str:
    """``transformers``' ``clean_up_tokenization`` (spaces before punctuation and
    English contractions, for WordPiece-style decoders)."""
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text
