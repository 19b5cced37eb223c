"""The PACS side of the window: the DICOM receiver's control and settings, and the query/retrieve dialog."""
