"""What a workspace does with its inputs, without Qt and without torch: the steps between the I/O, the engine's
API and the audit log, for the UI's workers to run and its widgets to show.  Unit-tested on their own."""
