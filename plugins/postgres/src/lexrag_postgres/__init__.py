"""lexrag-postgres: lexrag's index in PostgreSQL + pgvector, shared by many lexrag servers."""
