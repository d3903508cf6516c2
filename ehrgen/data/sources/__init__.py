"""Raw EHR sources. Each turns its native tables into :class:`SourceTables`."""
