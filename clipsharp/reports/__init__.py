"""The report contract and what reads reports: path summaries, gates, statistics,
correlations over models, figures."""
