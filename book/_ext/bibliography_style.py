"""The References page labelled by author and year, the way the chapters cite.

With `bibtex_reference_style: author_year` a chapter cites "van den Oord et al., 2017", but
pybtex's default labels would list that work as "[vdOVK17]". This style labels each entry as it
is cited, and sorts the list by author, year and title.
"""

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx


def surname(person) -> str:
    """'van den Oord' for Aaron van den Oord, with LaTeX accents decoded."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [self.author_year(entry) for entry in entries]
        for label in labels:  # the same authors and year twice: 2016a, 2016b
            if labels.count(label) > 1:
                labels = self.lettered(labels, label)
        yield from labels

    @staticmethod
    def author_year(entry) -> str:
        names = [surname(person) for person in entry.persons.get("author", [])]
        authors = f"{names[0]} et al." if len(names) > 2 else " and ".join(names) or entry.key
        return f"{authors}, {entry.fields.get('year', 'n.d.')}"

    @staticmethod
    def lettered(labels: list[str], label: str) -> list[str]:
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        return [f"{x}{next(letters)}" if x == label else x for x in labels]


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def setup(app: Sphinx) -> dict:
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
