"""Media: SDP with SDES offer/answer, SRTP, RTP/RTCP, codecs, sources, sinks and statistics.

The SDP side is pure (:mod:`phone_sim.media.sdp`, :mod:`phone_sim.media.sdes`,
:mod:`phone_sim.media.payloads`, :mod:`phone_sim.media.negotiation`); it turns SDP bodies into
a :class:`~phone_sim.media.negotiation.NegotiatedAudio` that the media stream consumes.
"""
