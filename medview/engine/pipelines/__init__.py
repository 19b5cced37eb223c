"""One pipeline per clinical task: io objects in, results of ``medview.engine.api`` out (torch side)."""
