DROP TABLE arena_battles;
