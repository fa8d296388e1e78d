//! What the session sends a browser: one JSON object per event. INTERFACE #19: the lead.
