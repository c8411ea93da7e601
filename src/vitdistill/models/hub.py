"""Pretrained weights without a network: the local cache at once, or one line saying what to do.

timm fetches pretrained weights from the Hugging Face Hub, whose client retries a failed
connection for most of a minute before it gives up. Before a pretrained build, one request with
a short timeout asks whether the hub answers; when it does not, the build runs in the hub
client's offline mode, so cached weights load at once and missing ones fail at once, and the
failure is a UserError that names the way to a local file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from vitdistill.errors import UserError, first_line

PROBE_TIMEOUT_S = 3.0
LOCAL_FILE_HINT = "give a local weights file with checkpoint=PATH (teacher.checkpoint or model.checkpoint in a training config)"


def _hub():
    """huggingface_hub's settings module, or None without the package (timm then uses plain URLs)."""
    try:
        from huggingface_hub import constants

        return constants
    except ImportError:
        return None


def hub_answers(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``endpoint`` answers one HEAD request within ``timeout`` s (proxies as the hub client uses them)."""
    try:
        from huggingface_hub.utils import get_session

        get_session().head(endpoint, timeout=timeout)
    except Exception:  # noqa: BLE001 - any failure to connect means "not reachable now"
        return False
    return True


def _downloads(name: str, kwargs: dict) -> bool:
    """Whether ``timm.create_model(name, pretrained=True, **kwargs)`` would fetch weights over the network."""
    from timm.models import get_pretrained_cfg

    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if overlay.get("file") or overlay.get("state_dict") or kwargs.get("pretrained_cfg"):
        return False
    cfg = get_pretrained_cfg(name)
    return cfg is None or bool(cfg.hf_hub_id or cfg.url)


@contextlib.contextmanager
def hub_fails_fast(name: str, pretrained: bool, kwargs: dict) -> Iterator[None]:
    """Around ``timm.create_model(name, pretrained=..., **kwargs)``: offline mode when weights would
    be downloaded but the hub does not answer, and a UserError (with :data:`LOCAL_FILE_HINT`) when
    they cannot be had."""
    hub = _hub()
    if not pretrained or not _downloads(name, kwargs):
        yield
        return
    offline_before = hub is not None and bool(hub.HF_HUB_OFFLINE)
    unreachable = hub is not None and not offline_before and not hub_answers(hub.ENDPOINT)
    if unreachable:
        hub.HF_HUB_OFFLINE = True  # read at each request: the cache only, no retries
    try:
        yield
    except OSError as e:  # the hub client's errors, urllib's and missing files are all OSErrors
        if unreachable:
            why = f"{hub.ENDPOINT} cannot be reached and they are not in the local cache"
        elif offline_before:
            why = "HF_HUB_OFFLINE is set and they are not in the local cache"
        else:
            why = first_line(e)
        raise UserError(
            f"cannot load the pretrained weights of {name}: {why}; {LOCAL_FILE_HINT}",
            settings=("checkpoint",),
        ) from None
    finally:
        if unreachable:
            hub.HF_HUB_OFFLINE = False
