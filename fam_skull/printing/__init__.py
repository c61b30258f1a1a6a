"""From a scan to a printable implant: ``fam-skull implant`` (:mod:`.scan`) and the implant's report (:mod:`.report`)."""
