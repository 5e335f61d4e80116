"""The built-in task table: the paper's tasks (Belanec et al., "Task Prompt Vectors") and the bundled extras.

Seventeen paper tasks: MNLI, QNLI, SNLI, SciTail, RTE (NLI); DBpedia-14, TREC (coarse), AG News,
Yahoo Answers topics (classification); SST-2, Yelp polarity, IMDB, SST-5 (sentiment); QQP, MRPC
(paraphrase); CoLA (acceptability); STS-B (similarity). Extras (``paper=False``): CB and the three
UCI "Sentiment Labelled Sentences" sets.

Fields and label names follow the bundled ``data/tasks/<folder>/labels.json`` (HF field names).
Verbalisers are short lowercase words, distinct from each other; multi-word label names get a
one-word verbaliser (SST-5: terrible/bad/neutral/good/great, LM-BFF's words; DBpedia: company,
school, ...). Split caveats (which bundled split is a stand-in, which test set is small) are data
on each spec (``TaskSpec.caveats``), so reports can print them.

Two-field tasks carry similarity targets (entailment / duplicate 1.0, contradiction / different 0.0,
neutral 0.5, STS-B score / 5): the encoder family reads them from the cosine of the two fields encoded
apart (`tpv_core.backbones.encoder`); the generative families ignore them.

Hub splits (``source="hub"``) follow the paper's rule, see `tpv_core.tasks.data`. Lookup by name (aliases,
custom tasks) is `tpv_core.tasks.registry`.
"""

from __future__ import annotations

from tpv_core.tasks.spec import GRID, GRID_MAX, TaskSpec, Templates

BIN = ("accuracy", "f1")
MULTI = ("accuracy", "macro_f1")
REG = ("pearson", "spearman", "accuracy")
GLUE = "nyu-mll/glue"

_NLI3_DESC = (
    "The premise entails the hypothesis.",
    "The premise neither entails nor contradicts the hypothesis.",
    "The two sentences contradict each other.",
)
# Similarity targets (`TaskSpec.similarity_targets`): the cosine between the two fields that each class
# stands for under the encoder's similarity readout, ordered as the untuned MiniLM cosines are; the prompt
# learns where the classes fall. CB has none (its cosines are not ordered by label): it keeps the description
# readout. The measurements behind both: docs/REPRODUCTION.md, section 7.
_NLI3_TARGETS = (1.0, 0.5, 0.0)  # entailment, neutral, contradiction
_BIN_TARGETS = (1.0, 0.0)  # entailment, not entailment
_NLI_INSTR = "Does the premise entail the hypothesis? Answer {choices}."
_SENT_DESC = ("The sentiment of this text is negative.", "The sentiment of this text is positive.")
_VAL_HELD = "validation is held-out train data"


def _t(instruction: str, *titles: str) -> Templates:
    return Templates(instruction=instruction, field_titles=tuple(titles))


def _sentiment(name: str, title: str, field: str, kind: str, bundled: str, hub_id: str | None,
               caveats: tuple[str, ...], paper: bool = True, label_names=("negative", "positive"),
               citation: str = "", hub_config: str | None = None) -> TaskSpec:
    return TaskSpec(
        name=name, title=title, family="sentiment", text_fields=(field,), label_field="label",
        label_names=tuple(label_names), words=("negative", "positive"), descriptions=_SENT_DESC,
        metrics=BIN, templates=_t(f"What is the sentiment of the {kind}? Answer {{choices}}.", kind.capitalize()),
        hub_id=hub_id, hub_config=hub_config, bundled=bundled, paper=paper, caveats=caveats,
        citation=citation,
    )


def _builtin_tasks() -> tuple[TaskSpec, ...]:
    stsb_words = tuple(f"{v:.1f}" for v in GRID)
    return (
        # ---------------------------------------------------------------- NLI
        TaskSpec(
            name="mnli", title="MNLI", family="nli", text_fields=("premise", "hypothesis"),
            label_field="label", label_names=("entailment", "neutral", "contradiction"),
            words=("entailment", "neutral", "contradiction"), descriptions=_NLI3_DESC, metrics=MULTI,
            templates=_t(_NLI_INSTR, "Premise", "Hypothesis"), hub_id=GLUE, hub_config="mnli",
            hub_eval_split="validation_matched", bundled="mnli", citation="Williams et al. 2018",
            caveats=(f"{_VAL_HELD} (MNLI train sample)",
                     "test = 1,000 rows of validation_matched; no mismatched split"),
            similarity_targets=_NLI3_TARGETS,
        ),
        TaskSpec(
            name="qnli", title="QNLI", family="nli", text_fields=("question", "sentence"),
            label_field="label", label_names=("entailment", "not_entailment"),
            words=("entailment", "not_entailment"),
            descriptions=("The sentence answers the question.", "The sentence does not answer the question."),
            metrics=BIN,
            templates=_t("Does the sentence answer the question? Answer {choices}.", "Question", "Sentence"),
            hub_id=GLUE, hub_config="qnli", bundled="qnli", citation="Wang et al. 2018 (GLUE)",
            caveats=(_VAL_HELD, "test = 1,000 rows of the GLUE dev set"),
            similarity_targets=_BIN_TARGETS,
        ),
        TaskSpec(
            name="snli", title="SNLI", family="nli", text_fields=("premise", "hypothesis"),
            label_field="label", label_names=("entailment", "neutral", "contradiction"),
            words=("entailment", "neutral", "contradiction"), descriptions=_NLI3_DESC, metrics=MULTI,
            templates=_t(_NLI_INSTR, "Premise", "Hypothesis"), hub_id="stanfordnlp/snli",
            bundled="snli", citation="Bowman et al. 2015",
            caveats=(_VAL_HELD, "test = 1,000 rows of the official dev split (no copy of the SNLI test split)"),
            similarity_targets=_NLI3_TARGETS,
        ),
        TaskSpec(
            name="scitail", title="SciTail", family="nli", text_fields=("premise", "hypothesis"),
            label_field="label", label_names=("entails", "neutral"), words=("entailment", "neutral"),
            descriptions=("The premise entails the hypothesis.", "The premise does not entail the hypothesis."),
            metrics=BIN, templates=_t(_NLI_INSTR, "Premise", "Hypothesis"),
            hub_id="allenai/scitail", hub_config="tsv_format",
            hub_label_map=(("entails", 0), ("neutral", 1)), bundled="scitail", citation="Khot et al. 2018",
            caveats=("SciTail: all splits carved from the official test split (split by hypothesis); "
                     "no row of the official train split",),
            similarity_targets=_BIN_TARGETS,
        ),
        TaskSpec(
            name="rte", title="RTE", family="nli", text_fields=("sentence1", "sentence2"),
            label_field="label", label_names=("entailment", "not_entailment"),
            words=("entailment", "not_entailment"),
            descriptions=("The first sentence entails the second.", "The first sentence does not entail the second."),
            metrics=BIN,
            templates=_t("Does the first sentence entail the second? Answer {choices}.", "Sentence 1", "Sentence 2"),
            hub_id=GLUE, hub_config="rte", bundled="rte", citation="Wang et al. 2018 (GLUE)",
            caveats=("validation carved from train", "test = the GLUE dev set (277 rows)"),
            similarity_targets=_BIN_TARGETS,
        ),
        # ---------------------------------------------------------------- topic classification
        TaskSpec(
            name="dbpedia_14", title="DBpedia-14", family="classification", text_fields=("title", "content"),
            label_field="label",
            label_names=("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                         "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant",
                         "Album", "Film", "WrittenWork"),
            words=("company", "school", "artist", "athlete", "politician", "transportation", "building",
                   "nature", "village", "animal", "plant", "album", "film", "book"),
            descriptions=tuple(f"This article is about {x}." for x in (
                "a company", "an educational institution", "an artist", "an athlete", "an office holder",
                "a means of transportation", "a building", "a natural place", "a village", "an animal",
                "a plant", "an album", "a film", "a written work")),
            metrics=MULTI,
            templates=_t("What is the topic of the Wikipedia article? Answer {choices}.", "Title", "Content"),
            hub_id="fancyzhx/dbpedia_14", bundled="dbpedia_14", citation="Zhang et al. 2015",
            caveats=("DBpedia: SMALL, 100-row test set (standard error about 5 points); 98-row validation",),
        ),
        TaskSpec(
            name="trec", title="TREC", family="classification", text_fields=("text",), label_field="coarse_label",
            label_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
            words=("abbreviation", "entity", "description", "human", "location", "number"),
            descriptions=("The question asks for an abbreviation.", "The question asks for an entity.",
                          "The question asks for a description.", "The question asks about a person.",
                          "The question asks for a location.", "The question asks for a number."),
            metrics=MULTI,
            templates=_t("What kind of answer does the question ask for? Answer {choices}.", "Question"),
            hub_id="CogComp/trec", bundled="trec", citation="Li & Roth 2002",
            caveats=(_VAL_HELD, "test = the original 500-row test set"),
        ),
        TaskSpec(
            name="ag_news", title="AG News", family="classification", text_fields=("text",), label_field="label",
            label_names=("World", "Sports", "Business", "Sci/Tech"),
            words=("world", "sports", "business", "science"),
            descriptions=("This news article is about world politics.", "This news article is about sports.",
                          "This news article is about business.", "This news article is about science and technology."),
            metrics=MULTI,
            templates=_t("What is the topic of the news article? Answer {choices}.", "Article"),
            hub_id="fancyzhx/ag_news", bundled="ag_news", citation="Zhang et al. 2015",
            caveats=(_VAL_HELD, "test = 1,000 of the 7,600 test rows"),
        ),
        TaskSpec(
            name="yahoo_answers_topics", title="Yahoo Answers", family="classification",
            text_fields=("question_title", "question_content"), label_field="label",
            label_names=("Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
                         "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
                         "Family & Relationships", "Politics & Government"),
            words=("society", "science", "health", "education", "computers", "sports", "business",
                   "entertainment", "family", "politics"),
            descriptions=tuple(f"This question is about {x}." for x in (
                "society and culture", "science and mathematics", "health", "education and reference",
                "computers and the internet", "sports", "business and finance", "entertainment and music",
                "family and relationships", "politics and government")),
            metrics=MULTI,
            templates=_t("What is the topic of the question? Answer {choices}.", "Title", "Question"),
            hub_id="community-datasets/yahoo_answers_topics", hub_label_field="topic",
            bundled="yahoo_answers_topics", citation="Zhang et al. 2015",
            caveats=("Yahoo: SMALL, 100-row test set (standard error about 5 points); 100-row validation "
                     "from train", "no best_answer field in the bundled data"),
        ),
        # ---------------------------------------------------------------- sentiment
        _sentiment("sst2", "SST-2", "sentence", "sentence", "sst2", GLUE, hub_config="sst2",
                   caveats=("sentence-level SST-2 (no phrase-level rows); validation = 500 of the dev split",
                            "test = 1,000 of the original test split"), citation="Socher et al. 2013"),
        _sentiment("yelp_polarity", "Yelp Polarity", "text", "review", "yelp_polarity", "fancyzhx/yelp_polarity",
                   caveats=("Yelp polarity: SMALL (260/60/200) and all splits from the train split "
                            "(no test-split rows)", "texts keep the CSV escapes (literal \\n, \\\")"),
                   citation="Zhang et al. 2015"),
        _sentiment("imdb", "IMDB", "text", "review", "imdb", "stanfordnlp/imdb", label_names=("neg", "pos"),
                   caveats=("IMDB: only 400 training reviews; validation from the train split",
                            "<br /> tags removed (HF imdb keeps them)"), citation="Maas et al. 2011"),
        TaskSpec(
            name="sst5", title="SST-5", family="sentiment", text_fields=("text",), label_field="label",
            label_names=("very negative", "negative", "neutral", "positive", "very positive"),
            words=("terrible", "bad", "neutral", "good", "great"),
            descriptions=("The sentiment of this text is very negative.", "The sentiment of this text is negative.",
                          "The sentiment of this text is neutral.", "The sentiment of this text is positive.",
                          "The sentiment of this text is very positive."),
            metrics=MULTI,
            templates=_t("What is the sentiment of the sentence? Answer {choices}.", "Sentence"),
            hub_id="SetFit/sst5", bundled="sst5", citation="Socher et al. 2013",
            caveats=("the real 5-class SST (LM-BFF text: lower-cased, tokenised)",
                     f"{_VAL_HELD} (official dev split not included)", "test = 1,000 of the 2,210 test rows"),
        ),
        # ---------------------------------------------------------------- paraphrase / acceptability / similarity
        TaskSpec(
            name="qqp", title="QQP", family="paraphrase", text_fields=("question1", "question2"),
            label_field="label", label_names=("not_duplicate", "duplicate"), words=("not_duplicate", "duplicate"),
            descriptions=("The two questions ask different things.", "The two questions ask the same thing."),
            metrics=BIN,
            templates=_t("Do the two questions ask the same thing? Answer {choices}.", "Question 1", "Question 2"),
            hub_id=GLUE, hub_config="qqp", bundled="qqp", citation="Wang et al. 2018 (GLUE)",
            caveats=("test is held-out QQP train data (no copy of the GLUE dev split)", _VAL_HELD),
            similarity_targets=_BIN_TARGETS[::-1],
        ),
        TaskSpec(
            name="mrpc", title="MRPC", family="paraphrase", text_fields=("sentence1", "sentence2"),
            label_field="label", label_names=("not_equivalent", "equivalent"),
            words=("not_equivalent", "equivalent"),
            descriptions=("The two sentences mean different things.", "The two sentences mean the same thing."),
            metrics=BIN,
            templates=_t("Do the two sentences mean the same thing? Answer {choices}.", "Sentence 1", "Sentence 2"),
            hub_id=GLUE, hub_config="mrpc", bundled="mrpc", citation="Dolan & Brockett 2005",
            caveats=(_VAL_HELD, "test = the GLUE dev set (408 rows)"),
            similarity_targets=_BIN_TARGETS[::-1],
        ),
        TaskSpec(
            name="cola", title="CoLA", family="acceptability", text_fields=("sentence",), label_field="label",
            label_names=("unacceptable", "acceptable"), words=("unacceptable", "acceptable"),
            descriptions=("This sentence is not grammatically acceptable.", "This sentence is grammatically acceptable."),
            metrics=BIN,
            templates=_t("Is the sentence grammatically acceptable? Answer {choices}.", "Sentence"),
            hub_id=GLUE, hub_config="cola", bundled="cola", citation="Warstadt et al. 2019",
            caveats=(_VAL_HELD, "test = 1,000 of the 1,043-row GLUE dev set"),
        ),
        TaskSpec(
            name="stsb", title="STS-B", family="similarity", text_fields=("sentence1", "sentence2"),
            label_field="label", label_names=stsb_words, words=stsb_words,
            descriptions=tuple(f"The sentences have similarity {w} out of 5." for w in stsb_words),
            metrics=REG, regression=True,
            templates=_t("How similar are the two sentences, from 0.0 (unrelated) to 5.0 (same meaning)? "
                         "Answer with a number in steps of 0.2.", "Sentence 1", "Sentence 2"),
            hub_id=GLUE, hub_config="stsb", bundled="stsb", citation="Cer et al. 2017",
            caveats=(_VAL_HELD, "test = 1,000 of the 1,500-row GLUE dev set (disjoint from validation)",
                     "scored as classification over a 0.2 grid; Pearson/Spearman of grid values vs true scores"),
            similarity_targets=tuple(round(v / GRID_MAX, 2) for v in GRID),
        ),
        # ---------------------------------------------------------------- extras, not in the paper
        TaskSpec(
            name="cb", title="CB", family="nli", text_fields=("premise", "hypothesis"), label_field="label",
            label_names=("entailment", "contradiction", "neutral"),
            words=("entailment", "contradiction", "neutral"),
            descriptions=(_NLI3_DESC[0], _NLI3_DESC[2], _NLI3_DESC[1]), metrics=MULTI,
            templates=_t(_NLI_INSTR, "Premise", "Hypothesis"), hub_id="aps/super_glue", hub_config="cb",
            bundled="cb", paper=False, citation="de Marneffe et al. 2019",
            caveats=("not a paper task", "SMALL: validation carved from train; test = the 56-row official validation"),
        ),
        *(
            _sentiment(f"sentences_{src}", f"Sentences ({src.capitalize()})", "text", "sentence", f"sentences_{src}",
                       None, paper=False, citation="Kotzias et al. 2015",
                       caveats=("not a paper task: UCI Sentiment Labelled Sentences stand-in",
                                "300-row test set"))
            for src in ("yelp", "imdb", "amazon")
        ),
    )


BUILTIN_TASKS: tuple[TaskSpec, ...] = _builtin_tasks()
PAPER_TASKS: tuple[str, ...] = tuple(s.name for s in BUILTIN_TASKS if s.paper)

ALIASES: dict[str, str] = {
    "multinli": "mnli", "sst": "sst2", "dbpedia": "dbpedia_14", "dbpedia14": "dbpedia_14",
    "yahoo": "yahoo_answers_topics", "yahoo_answers": "yahoo_answers_topics", "yelp": "yelp_polarity",
    "agnews": "ag_news", "sts": "stsb", "sts-b": "stsb", "trec6": "trec", "trec_coarse": "trec",
    "commitmentbank": "cb", "sst-2": "sst2", "sst-5": "sst5",
}
