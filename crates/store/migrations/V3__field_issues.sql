-- Optional fields an event held in a form we could not read (stored as absent, the event still
-- applied): a JSON array of {"pointer": declared JSON pointer, "expected": type}, never a value.
-- NULL when there were none.
ALTER TABLE inbox ADD COLUMN field_issues jsonb;
