"""Images: references, media types, descriptors, platform selection and the name → manifest store."""
