"""The case report: what the window holds of the current case, gathered into one PDF.

``collect_report`` (``collect``) asks each workspace for its
``report_section()`` and puts them into a ``CaseReport`` (plain dataclasses,
``sections``): the patient and study identifiers of the open CT series (or
"ANONYMISED"), each AI finding of that series with its provenance and a key
image (the axial slice that shows the finding best, with the finding's
overlays drawn as the user set them), the lung sound recording with its cycle
table, and the lesion photos with their verdicts.  ``write_pdf`` (``document``) lays it out as
HTML in a ``QTextDocument`` and prints that through ``QPdfWriter`` (A4, a footer
with the MedView version, the time and page numbers), so the report needs
nothing beyond Qt.  It prints black on white with ruled tables whatever the
screen's theme: the dark one's light text would vanish on paper.

Key images are drawn by a ``SliceView`` of their own, off screen: the user's
views, slice and overlays are never touched.  ``collect_report`` makes widgets,
so it runs on the GUI thread; ``write_pdf`` paints with QtGui only and may run
on a worker.
"""
