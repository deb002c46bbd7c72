"""Students: small timm backbones with a light decoder into the teacher's joint text-image space."""
