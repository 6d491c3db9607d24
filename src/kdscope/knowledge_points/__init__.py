"""Knowledge points (Cheng et al. 2020; Zhang et al. 2022): information discarding per input
unit, knowledge points on the foreground and background, learning speed and stability."""
