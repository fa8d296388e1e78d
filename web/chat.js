// chatd: placeholder until the page helper's script is merged.
