"""The sequencer: order books, pre-trade risk, websocket API, journal."""
