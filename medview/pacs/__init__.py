"""The workstation's side of a hospital PACS: the DICOM receiver (C-STORE SCP), query/retrieve, the local store.

``store``: received studies on disk with an SQLite index; ``receiver``: the
C-STORE/C-ECHO SCP that files into it; ``query``: C-FIND and C-GET against a
configured node.  No Qt, no torch; the UI drives them off the GUI thread.
"""
