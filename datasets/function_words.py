"""The closed-class (function) words of English that never count as co-occurring words.

Used by :mod:`.cooc` when a corpus has no ``%mor`` part-of-speech tags for a word, and always as
a veto (a word of this list never counts, whatever its tag). Closed classes: articles and
determiners, pronouns (all cases, possessives, reflexives), prepositions and verb particles,
conjunctions and complementisers, auxiliaries, modals and copulas (all forms), negation,
wh-words, quantifiers and number words, deictic and degree adverbs, the infinitive ``to``,
interjections and communicators (``yeah``, ``oh``, ``uhoh``), and the contractions of these
(``it's``, ``don't``, ``let's``). Open-class words (nouns, lexical verbs, adjectives) are not in
it, so an object or action word is never vetoed.
"""
from __future__ import annotations

_WORDS = """
a an the this that these those some any no every each either neither another other such what which
whatever whichever all both half few many much more most less least several enough
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones someone somebody something
anyone anybody anything everyone everybody everything nobody nothing none
about above across after against along among around as at before behind below beneath beside besides
between beyond by down during except for from in inside into like near of off on onto out outside over
past since through throughout till to toward towards under underneath until up upon with within without
away back forth apart
and but or nor so yet because if unless while whereas whether than though although once
am is are was were be been being do does did done doing have has had having
can could may might must shall should will would ought gonna wanna gotta hafta
not n't never
who whom whose when where why how
here there now then too very just only also even still again already ever quite rather really
almost soon yes yeah yep yup no nope okay ok oh uh um uhoh ah aw hey hi bye wow oops huh hmm mhm
please well
it's that's what's there's here's where's who's how's let's i'm i'll i'd i've you're you'll you'd you've
he's he'll she's she'll we're we'll we've they're they'll they've don't doesn't didn't can't cannot
couldn't won't wouldn't shouldn't isn't aren't wasn't weren't haven't hasn't hadn't mustn't
zero two three four five six seven eight nine ten first second
"""

#: the list (lower-case, apostrophes as in the reader's words)
FUNCTION_WORDS: frozenset[str] = frozenset(_WORDS.split())
