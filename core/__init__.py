"""Pure logic shared by every front door: decoding, settings, errors, runtimes. No eKuiper here."""
