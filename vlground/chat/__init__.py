"""CHAT transcripts: where they come from, how they are read, what is checked.

* :func:`iter_chat_sources` — ``.cha`` files, folders and ``.zip`` archives -> :class:`ChatSource`;
* :func:`read_chat` / :func:`read_chat_text` — a source or text -> :class:`ChatFile`
  (utterances with cleaned words and dependent tiers, and problems with TalkBank codes).

The cleaning policy and the checks are documented in ``docs/chat-policy.md``.
"""
from vlground.chat.reader import read_chat, read_chat_text
from vlground.chat.sources import ChatSource, count_chat_sources, iter_chat_sources
from vlground.chat.types import ChatFile, Problem, Utterance

__all__ = [
    "ChatFile",
    "ChatSource",
    "Problem",
    "Utterance",
    "count_chat_sources",
    "iter_chat_sources",
    "read_chat",
    "read_chat_text",
]
