-- Where email notifications go (optional).
ALTER TABLE users ADD COLUMN email TEXT;
