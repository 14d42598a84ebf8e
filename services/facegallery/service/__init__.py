"""The use case: `FaceService` (enroll / verify / identify), which every entry point calls,
its light input and result types, and the move of a gallery to a new recognizer."""
