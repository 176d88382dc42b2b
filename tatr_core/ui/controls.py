"""Shared controls: kept in session state across pages and mirrored in the URL query, so a view is
shared by copying its link (:func:`control`)."""
from __future__ import annotations

from typing import Any, Callable, Collection

import streamlit as st

TAU_CHOICES = [0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]  #: τ in % offered by the pages
EXEMPLAR_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128]
ORTHOGONAL_CHOICES = [0.0, 50.0, 80.0, 90.0, 95.0, 99.0]  #: Δ⊥ band in % of the non-zero entries offered by the pages


def orthogonal_fraction_control(key: str) -> float:
    """The Δ⊥ band (``--orthogonal-fraction``) as a select slider in %; returns the fraction."""
    pct = st.select_slider("Δ⊥: share of the entries (%)", ORTHOGONAL_CHOICES,
                           key=control(key, 90.0, ORTHOGONAL_CHOICES),
                           help="Δ⊥ is the paper's 'near-zero inner product': this share of the non-zero task-vector "
                                "entries with the smallest |g ⊙ Δ|. Δ⁺ and Δ⁻ are the rest, by sign. It largely sets "
                                "every component figure and landscape.")
    return pct / 100


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(raw)
        return raw.lower() in ("true", "1")
    if isinstance(default, (list, tuple)):
        return [_parse(part, default[0]) if default else part for part in raw.split(",") if part]
    return type(default)(raw)


def _unparse(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _valid(value: Any, valid: Collection | Callable[[Any], bool] | None) -> bool:
    if valid is None:
        return True
    if callable(valid):
        return bool(valid(value))
    if isinstance(value, list):
        return all(v in valid for v in value)
    return value in valid


#: the longest value a control takes from the URL (a zoo's manifest path is the longest a user types)
MAX_QUERY = 4096


def control(key: str, default: Any, valid: Collection | Callable[[Any], bool] | None = None) -> str:
    """Prepare the shared control ``key`` and return the key for the widget (created without a default).

    First use in a session: the value comes from ``?key=`` in the URL when it parses and is
    ``valid``, else ``default``.  Afterwards the session's value is kept (also across pages, see
    :func:`keep_controls`) and written back to the URL query.
    """
    if key not in st.session_state:
        value = default
        raw = st.query_params.get(key)
        if raw is not None and len(raw) > MAX_QUERY:
            st.warning(f"The link's ?{key}= is {len(raw):,} characters long, over the limit of {MAX_QUERY:,}: "
                       f"it is ignored, and {key} starts at its default.")
            raw = None
        if raw is not None:
            try:
                parsed = _parse(raw, default)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None and _valid(parsed, valid):
                value = parsed
        st.session_state[key] = value
    elif not _valid(st.session_state[key], valid):
        st.session_state[key] = default
    st.session_state.setdefault("_controls", set()).add(key)
    st.query_params[key] = _unparse(st.session_state[key])
    return key


def keep_controls() -> None:
    """Keep every shared control's value while its page is not shown (Streamlit drops the state of
    widgets that are not rendered; re-assigning it through the Session State API keeps it)."""
    for key in st.session_state.get("_controls", ()):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
