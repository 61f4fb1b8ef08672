"""Grammatical guards: what a question's grammar says that its words do not (a choice, a time relation, a tense,
who acts), read from closed classes of function words and their neighbours.

The lexical guards (``guards``) compare the details two questions name and the structural ones (``structure``)
the order of the words they share. Four classes of wrong hits are the same details in another grammar, and score
0.79-0.89, above many true paraphrases (``holdout5.jsonl``, ``holdout6.jsonl``):

- ``choice_differs``: one side asks to choose an order ("Do I verify my email first or set up 2FA first?", "Do I
  get the keys before or after the walkthrough?", "¿en qué orden ...?"), the other asks no choice ("After setting up
  2FA, how do I verify my email?"): the answer to a choice names one alternative, the answer to the other question
  a procedure.
- ``time_relation_differs``: both sides relate two events in time and one says *after* (after, afterwards, once
  <clause>, después de, luego de, tras, una vez <participle / que>), the other *before* (before, prior to,
  beforehand, until, till, antes de, hasta que): "Una vez pagada la fianza, ¿cuántos días tengo para firmar?" /
  "¿Tengo que firmar el contrato antes de pagar la fianza?". "once a month", "una vez al mes" are frequencies. An
  action already done ("already" beside a past form, "ya" + a Spanish preterite or "ha" + participle) reads as
  *after*: "We applied already — can we still view the property?" / "Should we view the property before
  applying?", "Ya firmé el contrato, ¿cuándo pago la fianza?" / "¿... antes de firmar el contrato?".
- ``tense_differs``: one side asks about the past only (did, was, were, had, has/have + participle, a Spanish
  preterite or "ha" + participle), the other about the future only (will, 'll, going to + verb, va a + infinitive,
  a Spanish future): "Has the price dropped recently?" / "Will the price drop soon?". Present and future are not
  compared ("Do I get a refund?" / "Will I get a refund?" ask the same).
- ``agent_differs``: the same verb with another person as its subject, where one side's subject is the asker or the
  one asked (I, we, you, a Spanish first- or second-person modal: tengo, puedes) and the other's a third party named
  as the subject (the landlord, they, el casero): "¿Cuánto preaviso tengo que dar?" / "¿Cuánto preaviso tiene que
  dar el casero?", "Do I have to give notice?" / "Does the landlord have to give notice?". "I" against "you" is not
  compared (how a request is phrased either way: ``guards._roles_differ``), nor a Spanish third-person form with no
  third party named (it is "usted", the one asked).

- ``modality_differs``: one side asks for a permission or a possibility only (can, may, allowed, ¿puedo?, ¿se
  puede?, ¿me dejan?), the other for an obligation only (must, have to, do I need, required, ¿debo?, ¿tengo que?,
  ¿hay que?): "¿Puedo tener mascotas?" / "¿Debo pagar un depósito por mascota?", "Can I paint the walls?" / "Do I have
  to paint the walls before moving out?". Advice ("should") is neither.

Each function takes folded tokens (``guards.Features.tokens``; ``tense_differs`` the accented ``lowered`` too) and
depends on nothing else; ``guards.check`` runs them as the ``choice``, ``time_relation``, ``tense``, ``agent`` and
``modality`` guards.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

__all__ = [
    "agent_differs",
    "choice_differs",
    "is_participle",
    "modality_differs",
    "tense_differs",
    "time_relation_differs",
]


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# ------------------------------------------------------------------------------------------------ choice

_OR = _set("or o u")
# An "or" asks to choose an order when an ordering word stands in its clause: "X first or Y first", "before or
# after", "¿primero ... o ...?". A bare "or" lists examples as often as it asks a choice ("a website or app",
# "Saturday or Sunday", "is it still available or has it sold"): refusing those cost 60 paraphrases of the tuning
# files for 3 negatives.
_ORDER_WORDS = _set("first before after then later primero antes despues luego")
_ORDER_NOUNS = _set("order orden")  # "in what order", "¿en qué orden?" (not "what's the status of my order")
_WHICH = _set("what which que cual")


def _asks_choice(tokens: Sequence[str]) -> bool:
    words = set(tokens)
    if words & _OR and words & _ORDER_WORDS:
        return True
    if "which" in words and "first" in words:
        return True
    return any(w in _WHICH and n in _ORDER_NOUNS and i > 0 and tokens[i - 1] in ("in", "en")
               for i, (w, n) in enumerate(pairwise(tokens)))  # fmt: skip


def choice_differs(a: Sequence[str], b: Sequence[str]) -> bool:
    """One side asks to choose between alternatives (or their order), the other asks no choice."""
    return _asks_choice(a) != _asks_choice(b)


# ------------------------------------------------------------------------------------------------ time relation

_AFTER = _set("after afterwards afterward despues tras")
_BEFORE = _set("before beforehand prior until till antes")
# "once" and "una vez" relate events only when a clause or a participle follows ("once I pay", "una vez pagada");
# "once a month", "una vez al mes", "once or twice" are frequencies
_FREQUENCY = _set("a an per every each or al por a cada o more mas")


# "We applied already", "I've already signed", "ya firmé", "ya he pagado": an action done, so the question is about
# what comes after it ("We applied already — can we still view the property?" is not "Should we view it before
# applying?"). Only with a completed form next to it: "is it already available?", "¿ya está disponible?" relate
# nothing.
_ALREADY = _set("already ya")
_CLITICS = _set("me te se nos os le les lo la los las")  # "ya me he mudado", "ya lo pagué"


def _completed(tokens: Sequence[str], lowered: Sequence[str], index: int) -> bool:
    """A past form beside "already" / "ya": an English participle or past (within two words either side), a Spanish
    preterite or "ha" + participle right after "ya"."""
    if tokens[index] == "already":
        near = [*tokens[max(0, index - 2) : index], *tokens[index + 1 : index + 3]]
        return any(is_participle(w) for w in near)
    following = [w for w in lowered[index + 1 : index + 4] if w not in _CLITICS] if len(lowered) == len(tokens) else []
    if not following:
        return False
    if following[0] in _ES_PERFECT:
        return len(following) > 1 and _es_participle(following[1])
    word = following[0]
    return len(word) >= 4 and word.endswith(("é", "ó", "í", "aste", "iste", "amos")) and word not in _ES_NOT_PRETERITE


def _time_relations(tokens: Sequence[str], lowered: Sequence[str] = ()) -> frozenset[str]:
    found: set[str] = set()
    for index, word in enumerate(tokens):
        if word in _ALREADY and _completed(tokens, lowered, index):
            found.add("after")
            continue
        nxt = tokens[index + 1] if index + 1 < len(tokens) else ""
        relates = bool(nxt) and nxt not in _FREQUENCY
        if word in _AFTER or (word == "luego" and nxt == "de"):
            found.add("after")
        elif word in _BEFORE or (word == "hasta" and nxt == "que"):
            found.add("before")
        elif relates and (word == "once" or (word == "vez" and index > 0 and tokens[index - 1] == "una")):
            found.add("after")
    return frozenset(found)


def time_relation_differs(
    a: Sequence[str], b: Sequence[str], a_lowered: Sequence[str] = (), b_lowered: Sequence[str] = ()
) -> bool:
    """Both sides relate events in time, and one only by *after* (or an action already done), the other only by
    *before*. ``a_lowered`` / ``b_lowered``: the accented words, for the Spanish preterite after "ya"."""
    ra, rb = _time_relations(a, a_lowered), _time_relations(b, b_lowered)
    return len(ra) == len(rb) == 1 and ra != rb


# ------------------------------------------------------------------------------------------------ tense

_PAST_AUXILIARIES = _set("did didn't was wasn't were weren't had hadn't")
_PERFECT = _set("has have hasn't haven't")
_IRREGULAR_PARTICIPLES = _set("been done gone made paid sent seen taken given gotten got received come become left "
                              "sold bought built found heard held kept lost met put set told won written shown known "
                              "grown fallen risen brought caught chosen drawn driven eaten forgotten frozen hidden "
                              "spent stolen thrown understood")  # fmt: skip
_FUTURE = _set("will won't gonna")
_DETERMINERS = _set("the a an my your our their his her this that these those some any el la los las un una mi su")
_ES_PERFECT = _set("ha han has he hemos habia habian")
_ES_PAST = _set("fue fueron fui fuimos hubo")
_ES_GOING = _set("voy vas va vamos van")
_ES_NOT_PRETERITE = _set("qué sé fé té é café bebé")


def is_participle(word: str) -> bool:
    """An English past participle, roughly: a regular "-ed" form or one of the common irregular ones."""
    return word in _IRREGULAR_PARTICIPLES or (len(word) > 4 and word.endswith("ed"))


def _es_participle(word: str) -> bool:
    return len(word) > 4 and word.endswith(("ado", "ido", "ada", "ida", "cho", "sto", "rto", "lto"))


def _infinitive(word: str) -> bool:
    return len(word) >= 3 and word.endswith(("ar", "er", "ir", "arse", "erse", "irse", "arlo", "erlo", "irlo"))


def _past(tokens: Sequence[str], index: int) -> bool:
    word, window = tokens[index], tokens[index + 1 : index + 4]
    if word in _PAST_AUXILIARIES or word in _ES_PAST:
        return True
    if word in _PERFECT:
        return any(is_participle(w) for w in window)
    return word in _ES_PERFECT and bool(window) and _es_participle(window[0])


def _future(tokens: Sequence[str], index: int) -> bool:
    word, window = tokens[index], tokens[index + 1 : index + 3]
    if word in _FUTURE or word.endswith("'ll"):
        return not (word == "will" and index > 0 and tokens[index - 1] in _DETERMINERS)  # "a will": a testament
    if len(window) < 2:
        return False
    if word == "going":
        return window[0] == "to" and window[1] not in _DETERMINERS  # "going to the office" is no future
    return word in _ES_GOING and window[0] == "a" and _infinitive(window[1])


def _tenses(tokens: Sequence[str], lowered: Sequence[str]) -> frozenset[str]:
    found: set[str] = set()
    for index in range(len(tokens)):
        if _past(tokens, index):
            found.add("past")
        elif _future(tokens, index):
            found.add("future")
    for word in lowered:
        if len(word) >= 4 and word.endswith(("rá", "rán", "ré", "remos")):
            found.add("future")  # "bajará", "podrán", "pagaré": the Spanish future
        elif len(word) >= 4 and word.endswith("ó") and word not in _ES_NOT_PRETERITE:
            found.add("past")  # "bajó", "subió", "cobró": the preterite
    return frozenset(found)


def tense_differs(a: Sequence[str], b: Sequence[str], a_lowered: Sequence[str], b_lowered: Sequence[str]) -> bool:
    """One side asks about the past only, the other about the future only."""
    ta, tb = _tenses(a, a_lowered), _tenses(b, b_lowered)
    return len(ta) == len(tb) == 1 and ta != tb


# ------------------------------------------------------------------------------------------------ agent

_SPEAKERS = _set("i we you i'm we're you're yo nosotros usted ustedes tu")
_THIRD = _set("he she they it's he's she's they're el ella ellos ellas")
# Spanish modals and their person: the asker or the one asked ("tengo", "puedes") or third person ("tiene")
_ES_MODALS = {
    **dict.fromkeys(
        _set(
            "tengo tenemos debo debemos puedo podemos necesito necesitamos quiero queremos voy vamos tienes debes "
            "puedes necesitas quieres vas"
        ),
        "speaker",
    ),
    **dict.fromkeys(_set("tiene tienen debe deben puede pueden necesita necesitan quiere quieren va van"), "third"),
}
_SKIP = _set("to que a have has had need needs do does did can could should must will would may might not no "
             "already also still just really actually ever")  # fmt: skip
_OBJECT_MARKERS = _set("a al de del para con por to from for with by of")
# A role noun is a subject only after a definite determiner ("the landlord", "mi casero"): "a property owner" in
# an apposition, "owner's title insurance" name no actor.
_SUBJECT_DETERMINERS = _set("the my your our their his her el la los las mi mis su sus tu tus nuestro nuestra")
_NOT_VERBS = _DETERMINERS | _OBJECT_MARKERS | _SPEAKERS | _THIRD | _OR | _set("and y me him her them us it in on at "
                                                                             "about if when")  # fmt: skip


def _role_subject(tokens: Sequence[str], index: int, roles: frozenset[str]) -> bool:
    return tokens[index] in roles and index > 0 and tokens[index - 1] in _SUBJECT_DETERMINERS


def _agents(tokens: Sequence[str], roles: frozenset[str]) -> dict[str, set[str]]:
    """Per verb (a word after an English subject and its auxiliaries, or a Spanish modal's infinitive), the classes
    of its subject: ``speaker`` (I, we, you) or ``third`` (a role noun, he/she/they, named as the subject)."""
    out: dict[str, set[str]] = {}
    for index, word in enumerate(tokens):
        if word in _ES_MODALS:
            rest = tokens[index + 1 : index + 3]
            verb = next((w for w in rest if w not in ("que", "a")), "")
            if not _infinitive(verb):
                continue
            person = _ES_MODALS[word]
            if person == "third":
                named = any(_role_subject(tokens, i, roles) for i in range(len(tokens))) or any(
                    w in _THIRD for w in tokens)  # fmt: skip
                if not named or (index and tokens[index - 1] == "se"):
                    continue  # "¿tiene estacionamiento?": usted; "se puede": nobody in particular
            out.setdefault(verb, set()).add(person)
            continue
        if not (word in _SPEAKERS or word in _THIRD or _role_subject(tokens, index, roles)):
            continue
        position = index + 1
        while position < len(tokens) and tokens[position] in _SKIP:
            position += 1
        verb = tokens[position] if position < len(tokens) else ""
        if verb.isalpha() and verb not in _NOT_VERBS and verb not in roles:
            out.setdefault(verb, set()).add("speaker" if word in _SPEAKERS else "third")
    return out


def agent_differs(a: Sequence[str], b: Sequence[str], roles: frozenset[str]) -> bool:
    """A verb both sides share has the asker (or the one asked) as its subject on one side and a third party on the
    other, and never the same subject on both."""
    agents_a, agents_b = _agents(a, roles), _agents(b, roles)
    for verb in agents_a.keys() & agents_b.keys():
        x, y = agents_a[verb], agents_b[verb]
        if not x & y and {"speaker", "third"} == x | y:
            return True
    return False


# ------------------------------------------------------------------------------------------------ modality

_PERMISSION = _set("can could may allowed permitted able possible puedo puedes puede podemos pueden podria "
                   "podrian posible permite permiten dejan deja")  # fmt: skip
_OBLIGATION = _set("must required require requires mandatory obligatory obligatorio obligatoria debo debes debe "
                   "debemos deben necesario necesaria requisito requiere requieren")  # fmt: skip
_OBLIGATION_PHRASES = (("have", "to"), ("has", "to"), ("tengo", "que"), ("tiene", "que"), ("tienes", "que"),
                       ("tienen", "que"), ("tenemos", "que"), ("hay", "que"), ("hace", "falta"))  # fmt: skip
# "need" asks an obligation only in a question ("Do I need to enable 2FA?", "Does the unit need ..."): "I need the
# invoice", "I need to reschedule", "necesito ..." state a want and ask for it (tuning files: 12 paraphrases of
# "Can I ...?" are "I need ...")
_NEED = _set("need needs")
_ASKING = _set("do does did will would")


def _modalities(tokens: Sequence[str]) -> frozenset[str]:
    found: set[str] = set()
    for index, word in enumerate(tokens):
        if word in _PERMISSION:
            found.add("permission")
        elif (
            word in _OBLIGATION
            or tuple(tokens[index : index + 2]) in _OBLIGATION_PHRASES
            or (word in _NEED and any(w in _ASKING for w in tokens[max(0, index - 3) : index]))
        ):
            found.add("obligation")
    return frozenset(found)


def modality_differs(a: Sequence[str], b: Sequence[str]) -> bool:
    """One side asks for a permission only, the other for an obligation only."""
    ma, mb = _modalities(a), _modalities(b)
    return len(ma) == len(mb) == 1 and ma != mb
