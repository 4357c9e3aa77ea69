"""Finding pretrained folders: a local path, or a hub id from the cache or the hub, with one
clear error when neither works (for instance offline, or a folder that does not exist)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from torch import Tensor

from cse.errors import PretrainedNotFoundError
from cse.paths import project_path, where


@dataclass(frozen=True)
class PretrainedSource:
    path: str  # a local folder, or a hub id to fetch
    offline: bool  # True: read local files only


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub's endpoint cannot be reached (one TCP connection, ``timeout`` seconds), or None.
    Asked before a download, so that a machine without network answers at once instead of after
    the hub client's retries (about 47 s)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy: only the hub client itself can tell
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"{endpoint.hostname}:{port} cannot be reached from this machine ({error.strerror or error})"
    return None


def _not_found(id_or_path: str, what: str, reason: str) -> PretrainedNotFoundError:
    return PretrainedNotFoundError(
        f"Could not load the {what} '{id_or_path}': {reason}. Looked for a local folder of that name "
        f"and in the Hugging Face cache ({constants.HF_HUB_CACHE}). On a machine with access, run "
        f"`hf download {id_or_path} --local-dir DIR` (or copy the folder here) and pass DIR instead.",
        component=what,
    )


def resolve_pretrained(
    id_or_path: str | os.PathLike, revision: str | None, what: str = "diffusion prior"
) -> PretrainedSource:
    """A local folder as it is; a hub id from the cache if it is there, else from the hub if allowed."""
    text = str(id_or_path)
    path = project_path(text)
    if path.is_dir():
        return PretrainedSource(str(path), offline=True)
    looks_local = text.startswith(("/", ".", "~")) or text.count("/") != 1 or project_path(path.parent).is_dir()
    if path.exists() or looks_local:  # "org/name" is a hub id unless its "org" is a local folder
        raise _not_found(text, what, f"there is no folder {where(text)}")
    try:
        return PretrainedSource(snapshot_download(text, revision=revision, local_files_only=True), offline=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        if hub_offline():
            raise _not_found(text, what, "it is not cached and HF_HUB_OFFLINE is set") from None
    if (reason := hub_unreachable()) is not None:
        raise _not_found(text, what, f"it is not cached and the hub {reason}")
    return PretrainedSource(text, offline=False)


def load_or_explain(loader, source: PretrainedSource, what: str, **kwargs):
    """``loader(source.path, ...)``, turning a failed download into :class:`PretrainedNotFoundError`."""
    try:
        return loader(source.path, local_files_only=source.offline, **kwargs)
    except OSError as error:
        if source.offline:
            raise
        raise _not_found(source.path, what, f"it is not cached and the hub could not be reached ({error})") from error


def model_components(source: PretrainedSource, revision: str | None) -> set[str]:
    """The components a pipeline folder lists in its ``model_index.json`` (``unet``, ``vae``, ...)."""
    from diffusers import DiffusionPipeline

    index = load_or_explain(DiffusionPipeline.load_config, source, "diffusion prior", revision=revision)
    return {name for name, value in index.items() if not name.startswith("_") and value and value[0] is not None}


@torch.no_grad()
def empty_prompt_embedding(source: PretrainedSource, revision: str | None) -> Tensor:
    """The text encoder's output for the empty prompt, ``[1, L, D]``; the encoder is not kept."""
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = load_or_explain(
        CLIPTokenizer.from_pretrained, source, "tokenizer", subfolder="tokenizer", revision=revision
    )
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        # an offline hub id can yield a tokenizer holding nothing but its special tokens, silently
        raise _not_found(source.path, "tokenizer", f"it loaded empty ({len(tokenizer)} tokens)")
    encoder = load_or_explain(
        CLIPTextModel.from_pretrained, source, "text encoder", subfolder="text_encoder", revision=revision
    )
    ids = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return encoder(ids.input_ids)[0].float()
