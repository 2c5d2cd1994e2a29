"""The local side: the bookended file, the cut, and the spool its batches wait in."""
